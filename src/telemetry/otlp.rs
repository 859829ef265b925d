//! Where the OTLP exporters of the three signals send: one base URL and
//! protocol for all, each signal with its own path and its own override
//! variables, as the OpenTelemetry specification defines them.

use anyhow::Context as _;
use opentelemetry_otlp::{
    LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig as _,
};

use crate::configuration::{OtlpProtocol, Settings, Signal};

/// The variable that sets a signal's full URL, used exactly as given.
fn endpoint_variable(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        Signal::Logs => "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    }
}

/// OTLP/HTTP puts each signal under its own path below the base URL.
pub fn signal_path(base: &str, signal: Signal) -> String {
    let path = match signal {
        Signal::Traces => "v1/traces",
        Signal::Logs => "v1/logs",
        Signal::Metrics => "v1/metrics",
    };
    if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// The URL to hand the exporter; `None` leaves it to the SDK, which reads
/// the signal's own variable (it wins, as the specification says) or takes
/// its default.
fn endpoint(settings: &Settings, signal: Signal) -> Option<String> {
    if std::env::var_os(endpoint_variable(signal)).is_some() {
        return None;
    }
    let base = settings.otlp_endpoint.as_ref()?.as_str();
    Some(match settings.otlp_protocol(signal) {
        OtlpProtocol::Grpc => base.to_string(),
        OtlpProtocol::HttpProtobuf => signal_path(base, signal),
    })
}

/// One exporter builder per signal and transport, the same steps for each.
macro_rules! build {
    ($exporter:ty, $settings:expr, $signal:expr) => {{
        let endpoint = endpoint($settings, $signal);
        let built = match $settings.otlp_protocol($signal) {
            OtlpProtocol::Grpc => {
                let builder = <$exporter>::builder().with_tonic();
                match endpoint {
                    Some(endpoint) => builder.with_endpoint(endpoint).build(),
                    None => builder.build(),
                }
            }
            OtlpProtocol::HttpProtobuf => {
                let builder = <$exporter>::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                match endpoint {
                    Some(endpoint) => builder.with_endpoint(endpoint).build(),
                    None => builder.build(),
                }
            }
        };
        built.with_context(|| format!("cannot build the OTLP {:?} exporter", $signal))
    }};
}

pub fn span_exporter(settings: &Settings) -> anyhow::Result<SpanExporter> {
    build!(SpanExporter, settings, Signal::Traces)
}

pub fn log_exporter(settings: &Settings) -> anyhow::Result<LogExporter> {
    build!(LogExporter, settings, Signal::Logs)
}

pub fn metric_exporter(settings: &Settings) -> anyhow::Result<MetricExporter> {
    build!(MetricExporter, settings, Signal::Metrics)
}

#[cfg(test)]
mod tests {
    use super::signal_path;
    use crate::configuration::Signal;

    #[test]
    fn each_signal_has_its_path_below_the_base_path() {
        assert_eq!(
            signal_path("http://collector:4318/", Signal::Traces),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            signal_path("http://gw/otlp", Signal::Logs),
            "http://gw/otlp/v1/logs"
        );
        assert_eq!(
            signal_path("http://gw/otlp", Signal::Metrics),
            "http://gw/otlp/v1/metrics"
        );
    }
}
