//! Flushing finished spans: to the OTLP endpoint when one is configured
//! (within the bound), then to the spool (marked as shipped when the export
//! succeeded, so that `lucid-exporter` does not send them twice).

use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;

use super::spool::{Pending, Spool};
use super::{warn_once, Active, Command, Export};

pub use lucid_layout::Protocol;

/// The request the spans make, grouped by resource and scope.
pub fn to_request(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
    let resource = ResourceAttributesWithSchema::from(resource);
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &resource),
    }
}

/// The endpoint as configured, for messages.
fn endpoint() -> String {
    std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .unwrap_or_default()
}

/// Finished spans, with their OTLP-JSON encoding for the spool.
pub(super) struct Batch {
    spans: Vec<SpanData>,
    /// The `resourceSpans` array, encoded.
    json: Vec<u8>,
}

impl Batch {
    /// Encodes the spans (an empty batch encodes to nothing).
    pub fn encode(active: &Active, spans: Vec<SpanData>) -> Batch {
        let json = if spans.is_empty() {
            Vec::new()
        } else {
            let request = to_request(&active.resource, spans.clone());
            serde_json::to_vec(&request.resource_spans).unwrap_or_default()
        };
        Batch { spans, json }
    }

    /// Adds another batch's spans.
    pub fn append(&mut self, other: Batch) {
        if other.spans.is_empty() {
            return;
        }
        if self.spans.is_empty() {
            *self = other;
            return;
        }
        join_arrays(&mut self.json, &other.json);
        self.spans.extend(other.spans);
    }

    /// The OTLP-JSON `ExportTraceServiceRequest`.
    fn request_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + 20);
        out.extend_from_slice(b"{\"resourceSpans\":");
        out.extend_from_slice(&self.json);
        out.push(b'}');
        out
    }
}

/// Joins two encoded JSON arrays: `[a…]` + `[b…]` → `[a…,b…]`.
fn join_arrays(into: &mut Vec<u8>, other: &[u8]) {
    let (Some(b']'), Some(b'[')) = (into.last().copied(), other.first().copied()) else {
        return;
    };
    if other.len() <= 2 {
        return;
    }
    if into.len() <= 2 {
        *into = other.to_vec();
        return;
    }
    into.pop();
    into.push(b',');
    into.extend_from_slice(&other[1..]);
}

/// Opens the spool file for the command's next batch (see [`Spool::begin`]).
pub(super) fn prepare(active: &Active, command: &Command) -> Option<Pending> {
    if crate::state::validate_id(&command.container).is_err() {
        // No directory can be named after it; the command itself fails.
        return None;
    }
    let trace = format!("{}-{}", command.trace.trace_id, command.trace.span_id);
    match Spool::new(&active.root).begin(&command.container, &trace) {
        Ok(pending) => Some(pending),
        Err(e) => {
            warn_once(format!("{e}: the spans of this command are dropped"));
            None
        }
    }
}

/// Exports, then spools (into `pending`, opened by [`prepare`]), a batch.
pub(super) fn flush(active: &Active, batch: Batch, pending: Option<Pending>) {
    if batch.spans.is_empty() {
        return;
    }
    let shipped = match &active.export {
        Export::Spool => false,
        Export::Otlp { protocol, timeout } => {
            let deadline = Instant::now() + *timeout;
            match send(active, *protocol, deadline, batch.spans.clone()) {
                Ok(()) => true,
                Err(e) => {
                    warn_once(format!(
                        "exporting spans to {}: {e}: they stay in the spool for lucid-exporter",
                        endpoint()
                    ));
                    false
                }
            }
        }
    };
    let Some(pending) = pending else {
        return;
    };
    if let Err(e) = pending.commit(&batch.request_json(), shipped) {
        warn_once(format!("{e}: the spans of this command are dropped"));
    }
}

fn send(
    active: &Active,
    protocol: Protocol,
    deadline: Instant,
    spans: Vec<SpanData>,
) -> Result<(), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let endpoint = endpoint();
    if endpoint
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https:")
    {
        return Err("https endpoints are not exported directly (lucid speaks plain http); leave OTEL_EXPORTER_OTLP_ENDPOINT unset and let lucid-exporter ship the spool".into());
    }
    let otlp = match protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        Protocol::Grpc => {
            return super::grpc::export(&endpoint, &to_request(&active.resource, spans), deadline)
        }
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    let client = super::http::BlockingClient::new(deadline);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_protocol(otlp)
        .with_timeout(timeout)
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .build()
        .map_err(|e| e.to_string())?;
    exporter.set_resource(&active.resource);
    futures_executor::block_on(exporter.export(spans))
        .map_err(|e| client.last_error().unwrap_or_else(|| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_arrays_join_into_one() {
        let mut a = br#"[{"x":1}]"#.to_vec();
        join_arrays(&mut a, br#"[{"y":2},{"z":3}]"#);
        let joined: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(joined, serde_json::json!([{"x":1},{"y":2},{"z":3}]));
        let mut empty = b"[]".to_vec();
        join_arrays(&mut empty, br#"[{"y":2}]"#);
        assert_eq!(empty, br#"[{"y":2}]"#);
        join_arrays(&mut empty, b"[]");
        assert_eq!(empty, br#"[{"y":2}]"#);
    }
}
