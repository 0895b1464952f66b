//! W3C trace context: the `TRACEPARENT`/`TRACESTATE` environment carrier, and
//! the container's trace as the state file keeps it.

/// Part of the state's schema (`state.json` keeps the trace), defined there.
pub use crate::state::ContainerTrace;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// A `TRACEPARENT` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed TRACEPARENT {value:?}: {reason} (want 00-<32 hex>-<16 hex>-<2 hex>)")]
pub struct TraceparentError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a W3C `traceparent` (version 00; later versions are read by their
/// first four fields, as the specification asks).
pub fn parse_traceparent(value: &str) -> Result<SpanContext, TraceparentError> {
    let bad = |reason| TraceparentError {
        value: value.to_owned(),
        reason,
    };
    let value = value.trim();
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad("it has fewer than four fields"));
    };
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return Err(bad("the version is not two hex digits"));
    }
    if version == "00" && fields.next().is_some() {
        return Err(bad("version 00 has exactly four fields"));
    }
    if trace.len() != 32 || !is_lower_hex(trace) {
        return Err(bad("the trace id is not 32 lowercase hex digits"));
    }
    if span.len() != 16 || !is_lower_hex(span) {
        return Err(bad("the parent id is not 16 lowercase hex digits"));
    }
    if flags.len() != 2 || !is_lower_hex(flags) {
        return Err(bad("the flags are not two hex digits"));
    }
    let trace_id = TraceId::from_hex(trace).map_err(|_| bad("the trace id is not hex"))?;
    let span_id = SpanId::from_hex(span).map_err(|_| bad("the parent id is not hex"))?;
    if trace_id == TraceId::INVALID {
        return Err(bad("the trace id is all zeros"));
    }
    if span_id == SpanId::INVALID {
        return Err(bad("the parent id is all zeros"));
    }
    let flags = u8::from_str_radix(flags, 16).map_err(|_| bad("the flags are not hex"))?;
    Ok(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 1),
        true,
        TraceState::NONE,
    ))
}

/// Formats a `traceparent` for the span.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!(
        "00-{trace_id}-{span_id}-{:02x}",
        if sampled { 1 } else { 0 }
    )
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A saved [`ContainerTrace`] (plain data in the state's schema) as
/// OpenTelemetry values.
pub trait TraceIds {
    /// The ids as OpenTelemetry values, or why they cannot be used.
    fn ids(&self) -> Result<(TraceId, SpanId), String>;
    /// The root span as a remote parent for a command's span.
    fn root_context(&self) -> Result<SpanContext, String>;
    /// The `TRACEPARENT` a container's process gets: its parent is the
    /// container's root span.
    fn traceparent(&self) -> Option<String>;
}

impl TraceIds for ContainerTrace {
    fn ids(&self) -> Result<(TraceId, SpanId), String> {
        let trace_id = TraceId::from_hex(&self.trace_id)
            .ok()
            .filter(|id| *id != TraceId::INVALID && self.trace_id.len() == 32)
            .ok_or_else(|| format!("trace id {:?} is not 32 hex digits", self.trace_id))?;
        let span_id = SpanId::from_hex(&self.span_id)
            .ok()
            .filter(|id| *id != SpanId::INVALID && self.span_id.len() == 16)
            .ok_or_else(|| format!("root span id {:?} is not 16 hex digits", self.span_id))?;
        Ok((trace_id, span_id))
    }

    fn root_context(&self) -> Result<SpanContext, String> {
        let (trace_id, span_id) = self.ids()?;
        let state = self.tracestate.parse().unwrap_or(TraceState::NONE);
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Ok(SpanContext::new(trace_id, span_id, flags, true, state))
    }

    fn traceparent(&self) -> Option<String> {
        let (trace_id, span_id) = self.ids().ok()?;
        Some(format_traceparent(trace_id, span_id, self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(value).unwrap();
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(
            format_traceparent(cx.trace_id(), cx.span_id(), cx.is_sampled()),
            value
        );
    }

    #[test]
    fn malformed_traceparents_are_refused_with_a_reason() {
        for value in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let err = parse_traceparent(value).unwrap_err();
            assert!(err.to_string().contains("TRACEPARENT"), "{err}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let cx = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
            .unwrap();
        assert!(!cx.is_sampled());
    }

    #[test]
    fn a_container_trace_with_bad_ids_says_which() {
        let trace = ContainerTrace {
            trace_id: "xyz".into(),
            span_id: "00f067aa0ba902b7".into(),
            ..Default::default()
        };
        assert!(trace.ids().unwrap_err().contains("trace id"));
        assert_eq!(trace.traceparent(), None);
    }
}
