//! OpenTelemetry and logging set-up: the tracer, logger and meter
//! providers, the propagators, and the `tracing` subscriber that feeds the
//! spans, the stdout log and the OTLP log records.

mod console_exporter;
mod console_signals;
mod export_watch;
mod log_format;
mod logs;
mod metrics;
mod otlp;
mod server_span;
mod signal_watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

use crate::configuration::{Exporter, SamplerKind, Settings};
pub use console_exporter::ConsoleExporter;
pub use export_watch::{CountEnded, Delivery, ExportWatch};
pub use metrics::{
    CLIENT_DURATION, ClientMetrics, HttpMetrics, INJECTED_FAILURES, SERVER_DURATION,
    status_error_type,
};
pub use server_span::{FailureReason, server_span};

/// The instrumentation scope of every span this service makes.
const TRACER_NAME: &str = "microservice";

/// Spans from the exporter's own transport would describe the export itself.
const OTEL_LAYER_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
     opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off";

/// Keeps the providers alive; flush them with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
    /// Whether events still go to `logs`.
    logs_open: Arc<AtomicBool>,
    metrics: Option<SdkMeterProvider>,
    /// Counted only where spans leave for a collector (OTLP).
    delivery: Option<Arc<Delivery>>,
}

/// Runs a provider's shutdown on a thread of its own (it blocks until
/// exported) and waits for it at most `timeout`: the meter provider takes a
/// fixed 5 s with a hung collector whatever it is told, and a detached
/// thread, unlike a blocking task, does not hold the runtime's exit.
async fn flush_off_runtime(
    timeout: Duration,
    shutdown: impl FnOnce() -> OTelSdkResult + Send + 'static,
) -> Option<String> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("telemetry-flush".into())
        .spawn(move || {
            let _ = done.send(shutdown());
        });
    if let Err(error) = spawned {
        return Some(format!("cannot start the flush thread: {error}"));
    }
    // A little past the providers' own bound, so that theirs is the error shown.
    match tokio::time::timeout(timeout + Duration::from_millis(100), result).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(error))) => Some(error.to_string()),
        Ok(Err(_)) => Some("the flush thread failed".into()),
        Err(_) => Some(format!("not done within {timeout:?}")),
    }
}

impl Telemetry {
    /// Exports what is still queued of every signal, the three at once,
    /// waiting at most `timeout` (a hung collector must not hold the
    /// process). What it reports reaches stdout only: the providers are gone.
    pub async fn shutdown(self, timeout: Duration) {
        let spans = self.provider.map(|provider| {
            flush_off_runtime(timeout, move || provider.shutdown_with_timeout(timeout))
        });
        self.logs_open.store(false, Ordering::Relaxed);
        let logs = self
            .logs
            .map(|logs| flush_off_runtime(timeout, move || logs.shutdown_with_timeout(timeout)));
        let metrics = self.metrics.map(|metrics| {
            flush_off_runtime(timeout, move || metrics.shutdown_with_timeout(timeout))
        });
        let (spans, logs, metrics) = tokio::join!(
            futures_util::future::OptionFuture::from(spans),
            futures_util::future::OptionFuture::from(logs),
            futures_util::future::OptionFuture::from(metrics),
        );
        if let Some(error) = logs.flatten() {
            tracing::warn!(%error, "log records not flushed");
        }
        if let Some(error) = metrics.flatten() {
            tracing::warn!(%error, "metrics not flushed");
        }
        if let Some(error) = spans {
            report_spans(self.delivery.as_deref(), error);
        }
    }
}

/// What became of the spans: flushed or not, and how many were lost.
fn report_spans(delivery: Option<&Delivery>, error: Option<String>) {
    let Some(delivery) = delivery else {
        match error {
            None => tracing::info!("spans flushed"),
            Some(error) => tracing::warn!(%error, "spans not flushed"),
        }
        return;
    };
    let (ended, delivered) = delivery.counts();
    let undelivered = ended.saturating_sub(delivered);
    let summary = format!("{undelivered} of {ended} spans could not be delivered to the collector");
    match (undelivered, error) {
        (0, None) => tracing::info!(spans = ended, "spans flushed: every span delivered"),
        (_, None) => tracing::warn!(spans = ended, delivered, undelivered, "{summary}"),
        (_, Some(error)) => {
            tracing::warn!(spans = ended, delivered, undelivered, %error, "{summary}")
        }
    }
}

/// Installs the propagators, the tracer provider and the global subscriber.
/// Must run inside the tokio runtime (the gRPC exporter needs its reactor).
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    let delivery = (!settings.sdk_disabled && settings.traces_exporter == Exporter::Otlp)
        .then(|| Arc::new(Delivery::default()));
    let (provider, logs, metrics) = if settings.sdk_disabled {
        (None, None, None)
    } else {
        let resource = resource(settings);
        (
            Some(tracer_provider(
                settings,
                resource.clone(),
                delivery.clone(),
            )?),
            logs::provider(settings, resource.clone())?,
            metrics::provider(settings, resource)?,
        )
    };
    if let Some(metrics) = &metrics {
        global::set_meter_provider(metrics.clone());
    }

    let log_filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy()
        // Log lines show no span fields, so the layer need not record them;
        // ExportWatch reports export failures once per outage instead.
        .and(filter_fn(|meta| {
            meta.is_event()
                && !matches!(
                    meta.name(),
                    "BatchSpanProcessor.ExportError" | "BatchLogProcessor.ExportError"
                )
        }));
    let stdout_log = log_format::layer(settings.log_format).with_filter(log_filter);

    let sdk_spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACER_NAME))
            // Spans carry semantic attributes only: no code location,
            // thread, target or busy/idle time.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(EnvFilter::new(OTEL_LAYER_FILTER))
    });
    // With the SDK off, the no-op tracer still carries incoming context on.
    let context_only = provider
        .is_none()
        .then(|| tracing_opentelemetry::layer().with_filter(EnvFilter::new(OTEL_LAYER_FILTER)));

    let logs_open = Arc::new(AtomicBool::new(true));
    let log_records = logs
        .as_ref()
        .map(|provider| logs::layer(provider, logs_open.clone()));

    Registry::default()
        .with(stdout_log)
        .with(sdk_spans)
        .with(context_only)
        .with(log_records)
        .try_init()
        .context("a global tracing subscriber was already installed")?;

    Ok(Telemetry {
        provider,
        logs,
        logs_open,
        metrics,
        delivery,
    })
}

fn tracer_provider(
    settings: &Settings,
    resource: Resource,
    delivery: Option<Arc<Delivery>>,
) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(sampler) = sampler(settings) {
        builder = builder.with_sampler(sampler);
    }
    builder = match settings.traces_exporter {
        Exporter::Otlp => {
            let delivery = delivery.unwrap_or_default();
            let exporter = ExportWatch::new(otlp::span_exporter(settings)?, delivery.clone());
            let batches = BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch_config())
                .build();
            builder.with_span_processor(CountEnded::new(batches, delivery))
        }
        Exporter::Console => builder.with_simple_exporter(ConsoleExporter::default()),
        Exporter::Discard => builder,
    };
    Ok(builder.build())
}

/// Spans per export unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise.
/// The SDK's 512 keeps export buffers about 1 MiB larger per instance than
/// 128 does (lab-bench, largest instance after load: 12.0-12.4 MiB in four
/// runs against 11.2-11.5 in two), and the CPU per request did not
/// measurably change.
pub const DEFAULT_EXPORT_BATCH_SIZE: usize = 128;

/// The batch processor's settings: the SDK's, which read OTEL_BSP_*, with
/// the lab's batch size where the environment does not set one.
fn batch_config() -> BatchConfig {
    let from_env = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_some() {
        from_env.build()
    } else {
        from_env
            .with_max_export_batch_size(DEFAULT_EXPORT_BATCH_SIZE)
            .build()
    }
}

/// service.name from the settings; version, instance and host unless
/// OTEL_RESOURCE_ATTRIBUTES already names them.
fn resource(settings: &Settings) -> Resource {
    let detected = Resource::builder().build();
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let defaults = [
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        KeyValue::new("host.name", hostname),
    ];
    let missing = defaults
        .into_iter()
        .filter(|kv| detected.get(&kv.key).is_none());
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes(missing)
        .build()
}

fn sampler(settings: &Settings) -> Option<Sampler> {
    let ratio = settings.traces_sampler_arg.unwrap_or(1.0);
    let sampler = match settings.traces_sampler? {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentbasedTraceidratio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    };
    Some(sampler)
}
