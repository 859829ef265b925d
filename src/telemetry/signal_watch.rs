//! Reports log and metric export failures once per outage, as
//! [`super::ExportWatch`] does for spans: the first failure warns, later ones
//! are counted, and the first success after them says what was lost.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

/// One signal's outage: whether exports fail, and what was lost since.
#[derive(Debug, Default)]
struct Outage {
    failing: AtomicBool,
    lost_exports: AtomicU64,
    lost_items: AtomicU64,
}

impl Outage {
    fn record(&self, result: &OTelSdkResult, items: u64, signal: &'static str) {
        match result {
            Err(error) => {
                self.lost_exports.fetch_add(1, Ordering::Relaxed);
                self.lost_items.fetch_add(items, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "{signal} export failed; dropped until the collector answers (further failures are counted, not logged)"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        lost_exports = self.lost_exports.swap(0, Ordering::Relaxed),
                        lost = self.lost_items.swap(0, Ordering::Relaxed),
                        "{signal} export recovered"
                    );
                }
            }
        }
    }
}

/// Wraps the OTLP log exporter.
pub struct WatchLogs<E> {
    inner: E,
    outage: Outage,
}

impl<E> WatchLogs<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            outage: Outage::default(),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for WatchLogs<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchLogs")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<E: LogExporter> LogExporter for WatchLogs<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count() as u64;
        let result = self.inner.export(batch).await;
        self.outage.record(&result, records, "log record");
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Wraps the OTLP metric exporter. Metrics are cumulative: an export lost
/// costs resolution, not counts.
pub struct WatchMetrics<E> {
    inner: E,
    outage: Outage,
}

impl<E> WatchMetrics<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            outage: Outage::default(),
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for WatchMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.outage.record(&result, 1, "metric");
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
