//! Log events as OTLP log records. The `tracing` bridge turns each event
//! into a record; the SDK stamps it with the trace and span id of the span
//! it was written in (an event outside any span gets none and is still
//! exported) and with the hop's resource.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    BatchConfig, BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider,
};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::registry::LookupSpan;

use super::DEFAULT_EXPORT_BATCH_SIZE;
use super::console_signals::ConsoleLogExporter;
use super::otlp;
use super::signal_watch::WatchLogs;
use crate::configuration::{Exporter, Settings};

/// The logger provider OTEL_LOGS_EXPORTER asks for; `None` for `none`.
pub fn provider(
    settings: &Settings,
    resource: Resource,
) -> anyhow::Result<Option<SdkLoggerProvider>> {
    let builder = SdkLoggerProvider::builder().with_resource(resource);
    let builder = match settings.logs_exporter {
        // The batch processor's own thread exports: a slow or absent
        // collector never holds the request that wrote the line.
        Exporter::Otlp => {
            let exporter = WatchLogs::new(otlp::log_exporter(settings)?);
            builder.with_log_processor(
                BatchLogProcessor::builder(exporter)
                    .with_batch_config(batch_config())
                    .build(),
            )
        }
        Exporter::Console => builder.with_simple_exporter(ConsoleLogExporter::default()),
        Exporter::Discard => return Ok(None),
    };
    Ok(Some(builder.build()))
}

/// The batch processor's settings: the SDK's, which read OTEL_BLRP_*, with
/// the spans' batch size where the environment does not set one (see
/// [`DEFAULT_EXPORT_BATCH_SIZE`]: smaller export buffers, same CPU).
fn batch_config() -> BatchConfig {
    let from_env = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE").is_some() {
        from_env.build()
    } else {
        from_env
            .with_max_export_batch_size(DEFAULT_EXPORT_BATCH_SIZE)
            .build()
    }
}

/// The bridge, fed the events the stdout log gets (RUST_LOG, default info)
/// except those of the export machinery itself: exporting a record about
/// an export would feed itself. It stops when `open` turns false, before the
/// provider shuts down (the SDK would warn about every later line).
pub fn layer<S>(provider: &SdkLoggerProvider, open: Arc<AtomicBool>) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let level = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    OpenTelemetryTracingBridge::new(provider).with_filter(level.and(filter_fn(move |meta| {
        meta.is_event() && !is_export_machinery(meta.target()) && open.load(Ordering::Relaxed)
    })))
}

/// Targets of the crates that carry the exports (and log about them).
fn is_export_machinery(target: &str) -> bool {
    const CRATES: [&str; 10] = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "reqwest",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
        "opentelemetry_http",
    ];
    let krate = target.split("::").next().unwrap_or(target);
    CRATES.contains(&krate)
}

#[cfg(test)]
mod tests {
    use super::is_export_machinery;

    #[test]
    fn the_exporters_own_events_stay_out_and_the_service_s_go() {
        assert!(is_export_machinery("opentelemetry_sdk"));
        assert!(is_export_machinery("hyper_util::client::legacy"));
        assert!(is_export_machinery("reqwest::connect"));
        assert!(!is_export_machinery("reqwest_retry::middleware"));
        assert!(!is_export_machinery("microservice::routes::chain"));
    }
}
