//! Keeps finished spans in memory until the command flushes them: export
//! happens once, at a moment the command chooses, never while a span ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The finished spans, shared between the SDK's processor and the flush.
#[derive(Debug, Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl Collected {
    /// A span processor that adds every sampled span to this collection.
    pub fn processor(&self) -> CollectingProcessor {
        CollectingProcessor(self.clone())
    }

    /// Adds a span made outside the SDK (the container's root span).
    pub fn push(&self, span: SpanData) {
        lock(&self.0).push(span);
    }

    /// Takes every span collected so far.
    pub fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut *lock(&self.0))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the spans are still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The SDK side of [`Collected`].
#[derive(Debug)]
pub struct CollectingProcessor(Collected);

impl SpanProcessor for CollectingProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
