//! OpenTelemetry and logging set-up: the tracer provider, the exporters, the
//! propagators, and the `tracing` subscriber that feeds both.

mod console_exporter;
mod export_watch;
mod log_format;
mod server_span;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

use crate::configuration::{OtlpProtocol, SamplerKind, Settings, TracesExporter};
pub use console_exporter::ConsoleExporter;
pub use export_watch::{CountEnded, Delivery, ExportWatch};
pub use server_span::{FailureReason, server_span};

/// The instrumentation scope of every span this service makes.
const TRACER_NAME: &str = "microservice";

/// Spans from the exporter's own transport would describe the export itself.
const OTEL_LAYER_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
     opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off";

/// Keeps the tracer provider alive; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Counted only where spans leave for a collector (OTLP).
    delivery: Option<Arc<Delivery>>,
}

impl Telemetry {
    /// Exports what is still queued, waiting at most `timeout` (a hung
    /// collector must not hold the process).
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        let error = match flushed {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(format!("the flush task failed: {error}")),
        };
        let Some(delivery) = self.delivery else {
            match error {
                None => tracing::info!("spans flushed"),
                Some(error) => tracing::warn!(%error, "spans not flushed"),
            }
            return;
        };
        let (ended, delivered) = delivery.counts();
        let undelivered = ended.saturating_sub(delivered);
        let summary =
            format!("{undelivered} of {ended} spans could not be delivered to the collector");
        match (undelivered, error) {
            (0, None) => tracing::info!(spans = ended, "spans flushed: every span delivered"),
            (_, None) => tracing::warn!(spans = ended, delivered, undelivered, "{summary}"),
            (_, Some(error)) => {
                tracing::warn!(spans = ended, delivered, undelivered, %error, "{summary}")
            }
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

    let delivery = (!settings.sdk_disabled && settings.traces_exporter == TracesExporter::Otlp)
        .then(|| Arc::new(Delivery::default()));
    let provider = if settings.sdk_disabled {
        None
    } else {
        Some(tracer_provider(settings, delivery.clone())?)
    };

    let log_filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy()
        // Log lines show no span fields, so the layer need not record them;
        // ExportWatch reports export failures once per outage instead.
        .and(filter_fn(|meta| {
            meta.is_event() && meta.name() != "BatchSpanProcessor.ExportError"
        }));
    let logs = log_format::layer(settings.log_format).with_filter(log_filter);

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

    Registry::default()
        .with(logs)
        .with(sdk_spans)
        .with(context_only)
        .try_init()
        .context("a global tracing subscriber was already installed")?;

    Ok(Telemetry { provider, delivery })
}

fn tracer_provider(
    settings: &Settings,
    delivery: Option<Arc<Delivery>>,
) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(settings));
    if let Some(sampler) = sampler(settings) {
        builder = builder.with_sampler(sampler);
    }
    builder = match settings.traces_exporter {
        TracesExporter::Otlp => {
            let delivery = delivery.unwrap_or_default();
            let exporter = ExportWatch::new(otlp_exporter(settings)?, delivery.clone());
            let batches = BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch_config())
                .build();
            builder.with_span_processor(CountEnded::new(batches, delivery))
        }
        TracesExporter::Console => builder.with_simple_exporter(ConsoleExporter::default()),
        TracesExporter::Discard => builder,
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

fn otlp_exporter(settings: &Settings) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT wins, as the specification says; the
    // SDK reads it itself as long as no endpoint is set here.
    let base = settings
        .otlp_endpoint
        .as_ref()
        .filter(|_| std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none())
        .map(|url| url.as_str().to_string());
    let exporter = match settings.otlp_protocol() {
        OtlpProtocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match base {
                Some(endpoint) => builder.with_endpoint(endpoint).build(),
                None => builder.build(),
            }
        }
        OtlpProtocol::HttpProtobuf => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            match base {
                Some(base) => builder.with_endpoint(traces_path(&base)).build(),
                None => builder.build(),
            }
        }
    };
    exporter.context("cannot build the OTLP span exporter")
}

/// OTLP/HTTP puts each signal under its own path below the base URL.
fn traces_path(base: &str) -> String {
    if base.ends_with('/') {
        format!("{base}v1/traces")
    } else {
        format!("{base}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::traces_path;

    #[test]
    fn traces_path_is_appended_below_the_base_path() {
        assert_eq!(
            traces_path("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces_path("http://gw/otlp"), "http://gw/otlp/v1/traces");
    }
}
