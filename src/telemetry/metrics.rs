//! Request metrics after the OpenTelemetry HTTP semantic conventions, and
//! the meter provider that exports them: the server and client request
//! durations, and the failures this hop injects on purpose.

use std::time::{Duration, Instant};

use http::Extensions;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::console_signals::ConsoleMetricExporter;
use super::otlp;
use super::signal_watch::WatchMetrics;
use crate::configuration::{Exporter, Settings};

/// The instrumentation scope of the service's metrics.
const METER_NAME: &str = "microservice";

pub const SERVER_DURATION: &str = "http.server.request.duration";
pub const CLIENT_DURATION: &str = "http.client.request.duration";
/// In the lab's own namespace: no semantic convention covers it.
pub const INJECTED_FAILURES: &str = "lab.injected_failures";

/// The buckets the HTTP semantic conventions advise for durations, seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The meter provider OTEL_METRICS_EXPORTER asks for; `None` for `none`.
/// Its reader exports every OTEL_METRIC_EXPORT_INTERVAL on a thread of its
/// own, so a collector in trouble never holds a request.
pub fn provider(
    settings: &Settings,
    resource: Resource,
) -> anyhow::Result<Option<SdkMeterProvider>> {
    let builder = SdkMeterProvider::builder().with_resource(resource);
    let interval = settings.metric_export_interval();
    let builder = match settings.metrics_exporter {
        Exporter::Otlp => builder.with_reader(
            PeriodicReader::builder(WatchMetrics::new(otlp::metric_exporter(settings)?))
                .with_interval(interval)
                .build(),
        ),
        Exporter::Console => builder.with_reader(
            PeriodicReader::builder(ConsoleMetricExporter)
                .with_interval(interval)
                .build(),
        ),
        Exporter::Discard => return Ok(None),
    };
    Ok(Some(builder.build()))
}

/// The instruments, from the global meter provider: no-ops when metrics
/// are off. Build them after [`super::init`].
#[derive(Clone)]
pub struct HttpMetrics {
    server: Histogram<f64>,
    client: Histogram<f64>,
    injected: Counter<u64>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let meter = global::meter(METER_NAME);
        let duration = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        Self {
            server: duration(SERVER_DURATION, "Duration of HTTP server requests."),
            client: duration(CLIENT_DURATION, "Duration of HTTP client requests."),
            injected: meter
                .u64_counter(INJECTED_FAILURES)
                .with_unit("{failure}")
                .with_description("Requests this hop failed on purpose (ERROR_RATE).")
                .build(),
        }
    }
}

impl HttpMetrics {
    /// One request this hop served; `attributes` are the server span's.
    pub fn server_request(&self, duration: Duration, attributes: &[KeyValue]) {
        self.server.record(duration.as_secs_f64(), attributes);
    }

    pub fn injected_failure(&self, route: &'static str) {
        self.injected.add(1, &[KeyValue::new("http.route", route)]);
    }

    /// Middleware recording each attempt of a call as one client request.
    pub fn client_middleware(&self) -> ClientMetrics {
        ClientMetrics(self.client.clone())
    }
}

/// `error.type` of a server or client request: the status code from 400
/// on, as the conventions say.
pub fn status_error_type(status: u16) -> Option<String> {
    (status >= 400).then(|| status.to_string())
}

pub struct ClientMetrics(Histogram<f64>);

#[async_trait::async_trait]
impl Middleware for ClientMetrics {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let url = request.url();
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method().as_str().to_owned()),
            KeyValue::new(
                "server.address",
                url.host_str().unwrap_or_default().to_owned(),
            ),
            KeyValue::new("url.scheme", url.scheme().to_owned()),
        ];
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let started = Instant::now();
        let result = next.run(request, extensions).await;
        let error_type = match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                status_error_type(status)
            }
            Err(error) => Some(transport_error_type(error).to_owned()),
        };
        if let Some(error_type) = error_type {
            attributes.push(KeyValue::new("error.type", error_type));
        }
        self.0.record(started.elapsed().as_secs_f64(), &attributes);
        result
    }
}

/// A low-cardinality name for a call that got no answer.
fn transport_error_type(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(error) if error.is_connect() => "connect",
        _ => "_OTHER",
    }
}
