//! Reports span export failures once per outage, not once per batch, and
//! counts what was delivered so that shutdown can say what was not.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Spans handed to the batch processor and spans the collector accepted.
/// The difference at shutdown is what was lost: failed exports, a full
/// queue, or spans still queued when the flush timed out.
#[derive(Debug, Default)]
pub struct Delivery {
    ended: AtomicU64,
    delivered: AtomicU64,
}

impl Delivery {
    /// (ended, delivered) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ended.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
        )
    }
}

/// Wraps the span processor to count every span that ends.
#[derive(Debug)]
pub struct CountEnded<P> {
    inner: P,
    delivery: Arc<Delivery>,
}

impl<P> CountEnded<P> {
    pub fn new(inner: P, delivery: Arc<Delivery>) -> Self {
        Self { inner, delivery }
    }
}

impl<P: SpanProcessor> SpanProcessor for CountEnded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.delivery.ended.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Wraps an exporter: the first failed export logs a warning, later failures
/// are only counted, and the first success after them logs what was lost.
pub struct ExportWatch<E> {
    inner: E,
    failing: AtomicBool,
    lost_batches: AtomicU64,
    lost_spans: AtomicU64,
    delivery: Arc<Delivery>,
}

impl<E> ExportWatch<E> {
    pub fn new(inner: E, delivery: Arc<Delivery>) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            lost_batches: AtomicU64::new(0),
            lost_spans: AtomicU64::new(0),
            delivery,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for ExportWatch<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportWatch")
            .field("inner", &self.inner)
            .field("failing", &self.failing)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for ExportWatch<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) => {
                self.lost_batches.fetch_add(1, Ordering::Relaxed);
                self.lost_spans.fetch_add(spans, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "span export failed; spans are dropped until the collector answers (further failures are counted, not logged)"
                    );
                }
            }
            Ok(()) => {
                self.delivery.delivered.fetch_add(spans, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        lost_batches = self.lost_batches.swap(0, Ordering::Relaxed),
                        lost_spans = self.lost_spans.swap(0, Ordering::Relaxed),
                        "span export recovered"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
