//! Logs and metrics over OTLP beside the spans: log records carry the
//! trace and span id of the span they were written in, each hop records
//! the HTTP server and client durations, and `none` sends nothing.

use std::time::Duration;

use lab::chain::Chain;
use lab::instance::Instance;
use lab::receiver::{MetricKind, MetricPoint, OtlpReceiver, Protocol, ReceivedLog};
use lab::testing::*;

const WAIT: Duration = Duration::from_secs(20);

/// The semantic conventions' duration buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn port_of(url: &str) -> String {
    url::Url::parse(url).unwrap().port().unwrap().to_string()
}

/// ms-1 → ms-2 → ms-3, the last failing every request on purpose.
async fn failing_chain(receiver: &OtlpReceiver) -> Chain {
    let hops = [
        hop("ms-1", 0),
        hop("ms-2", 0),
        hop("ms-3", 0).env("ERROR_RATE", "1"),
    ];
    let common = common(receiver)
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200");
    Chain::start(binary(), &common, &hops).await.unwrap()
}

async fn log_records_are_tied_to_their_spans(protocol: Protocol) {
    let receiver = OtlpReceiver::start(protocol).unwrap();
    let chain = failing_chain(&receiver).await;

    let trace_id = request(chain.entry().url()).await;

    let spans = receiver
        .wait_until(SPAN_WAIT, |spans| {
            spans
                .iter()
                .filter(|s| s.trace_id() == trace_id && s.name() == "GET /")
                .count()
                == 3
        })
        .await
        .unwrap_or_else(|spans| panic!("{:#?}", summary(&spans)));
    let failed = |log: &ReceivedLog| log.body() == "request failed" && log.trace_id() == trace_id;
    let logs = receiver
        .wait_for_logs(WAIT, |logs| {
            logs.iter().filter(|l| failed(l)).count() == 3
                && logs.iter().filter(|l| l.body() == "call failed").count() == 2
        })
        .await
        .unwrap_or_else(|logs| panic!("three `request failed` records: {logs:#?}"));
    for service in ["ms-1", "ms-2", "ms-3"] {
        let server = one(&spans, service, "GET /");
        let record = logs
            .iter()
            .find(|l| failed(l) && l.service == service)
            .unwrap_or_else(|| panic!("{service} wrote no `request failed` record"));
        assert_eq!(
            record.span_id(),
            server.span_id(),
            "{service}: the SERVER span"
        );
        assert_eq!(record.severity(), "WARN");
        assert_eq!(
            record.resource_attr("service.name").as_deref(),
            Some(service)
        );
        assert!(record.resource_attr("service.instance.id").is_some());
        let (status, error_type) = if service == "ms-3" {
            ("500", "injected_failure")
        } else {
            ("502", "downstream_failed")
        };
        assert_eq!(
            record.attr("status").as_deref(),
            Some(status),
            "{record:#?}"
        );
        assert_eq!(record.attr("error.type").as_deref(), Some(error_type));
        assert!(record.attr("reason").is_some(), "{record:#?}");
        // The callers also said which call failed, in the same span.
        let call_failed = logs.iter().find(|l| {
            l.body() == "call failed" && l.service == service && l.trace_id() == trace_id
        });
        if service == "ms-3" {
            assert!(call_failed.is_none(), "{call_failed:#?}");
        } else {
            let call_failed = call_failed.unwrap_or_else(|| panic!("{service}: {logs:#?}"));
            assert_eq!(call_failed.span_id(), server.span_id());
            assert_eq!(call_failed.severity(), "WARN");
            assert!(
                call_failed
                    .attr("url")
                    .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
            );
        }
    }
    // Written at start-up, outside any span: exported, without ids.
    let listening = logs
        .iter()
        .find(|l| l.body() == "listening" && l.service == "ms-1")
        .unwrap_or_else(|| panic!("no `listening` record: {logs:#?}"));
    assert_eq!(listening.trace_id(), "");
    assert_eq!(listening.span_id(), "");
    assert_eq!(listening.severity(), "INFO");
}

#[tokio::test]
async fn log_records_carry_their_span_over_grpc() {
    log_records_are_tied_to_their_spans(Protocol::Grpc).await;
}

#[tokio::test]
async fn log_records_carry_their_span_over_http() {
    log_records_are_tied_to_their_spans(Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn a_handled_request_writes_one_record_per_hop() {
    let receiver = grpc_receiver();
    let common = common(&receiver).env("OTEL_BLRP_SCHEDULE_DELAY", "100");
    let chain = Chain::start(binary(), &common, &[hop("ok-1", 0), hop("ok-2", 0)])
        .await
        .unwrap();

    let answer = get_json(chain.entry().url()).await;

    let (trace_id, span_id) = answer.trace_response();
    let handled = |log: &ReceivedLog| log.body() == "request handled" && log.trace_id() == trace_id;
    let logs = receiver
        .wait_for_logs(WAIT, |logs| logs.iter().filter(|l| handled(l)).count() == 2)
        .await
        .unwrap_or_else(|logs| panic!("{logs:#?}"));
    let entry = logs
        .iter()
        .find(|l| handled(l) && l.service == "ok-1")
        .unwrap();
    assert_eq!(entry.span_id(), span_id);
    assert_eq!(entry.severity(), "INFO");
    assert_eq!(entry.attr("status").as_deref(), Some("200"));
    assert!(entry.attr("duration_ms").is_some(), "{entry:#?}");
}

/// The latest point of `name` from `service` whose attribute `key` is `value`.
fn latest<'a>(
    points: &'a [MetricPoint],
    service: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Option<&'a MetricPoint> {
    points
        .iter()
        .rev()
        .find(|p| p.service == service && p.name == name && p.attr(key).as_deref() == Some(value))
}

#[tokio::test]
async fn every_hop_and_edge_records_request_durations() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let chain = failing_chain(&receiver).await;
    let ports: Vec<String> = chain.hops.iter().map(|h| port_of(h.url())).collect();

    let answers = requests(chain.entry().url(), 2, 1).await;
    assert!(answers.iter().all(|a| a.status == 502));

    let counted = |points: &[MetricPoint]| {
        (0..3).all(|i| {
            latest(
                points,
                &format!("ms-{}", i + 1),
                "http.server.request.duration",
                "server.port",
                &ports[i],
            )
            .is_some_and(|p| p.count == 2)
        }) && (0..2).all(|i| {
            latest(
                points,
                &format!("ms-{}", i + 1),
                "http.client.request.duration",
                "server.port",
                &ports[i + 1],
            )
            .is_some_and(|p| p.count == 2)
        })
    };
    let points = receiver
        .wait_for_metrics(WAIT, counted)
        .await
        .unwrap_or_else(|points| panic!("{points:#?}"));

    for (i, port) in ports.iter().enumerate() {
        let service = format!("ms-{}", i + 1);
        let server = latest(
            &points,
            &service,
            "http.server.request.duration",
            "server.port",
            port,
        )
        .unwrap();
        assert_eq!(server.kind, MetricKind::Histogram);
        assert_eq!(server.unit, "s");
        assert_eq!(server.bounds, BUCKETS);
        assert!(server.sum > 0.0);
        assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(server.attr("http.route").as_deref(), Some("/"));
        assert_eq!(server.attr("server.address").as_deref(), Some("127.0.0.1"));
        let (status, error) = if i == 2 {
            ("500", "injected_failure")
        } else {
            ("502", "downstream_failed")
        };
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(
            server.attr("error.type").as_deref(),
            Some(error),
            "{server:#?}"
        );
    }
    // The edges: each caller's client requests, named by the callee's address.
    for i in 0..2 {
        let service = format!("ms-{}", i + 1);
        let client = latest(
            &points,
            &service,
            "http.client.request.duration",
            "server.port",
            &ports[i + 1],
        )
        .unwrap();
        assert_eq!(client.kind, MetricKind::Histogram);
        assert_eq!(client.bounds, BUCKETS);
        assert_eq!(client.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
        let status = if i == 1 { "500" } else { "502" };
        assert_eq!(
            client.attr("http.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(client.attr("error.type").as_deref(), Some(status));
    }
    assert!(
        latest(
            &points,
            "ms-3",
            "http.client.request.duration",
            "http.request.method",
            "GET"
        )
        .is_none(),
        "ms-3 calls nobody"
    );
    let injected = points
        .iter()
        .rev()
        .find(|p| p.service == "ms-3" && p.name == "lab.injected_failures")
        .unwrap_or_else(|| panic!("{points:#?}"));
    assert_eq!(injected.kind, MetricKind::Sum);
    assert_eq!(injected.sum, 2.0);
    assert!(
        !points
            .iter()
            .any(|p| p.service == "ms-1" && p.name == "lab.injected_failures" && p.sum > 0.0)
    );
}

#[tokio::test]
async fn none_exports_no_logs_and_no_metrics() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let config = common(&receiver)
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
        .env("ERROR_RATE", "1");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();

    let trace_id = request(instance.url()).await;
    trace_spans(&receiver, &trace_id, 1).await;
    instance.terminate().unwrap();
    assert!(instance.wait(WAIT).await.is_some());

    assert_eq!(receiver.log_export_requests(), 0, "{:#?}", receiver.logs());
    assert_eq!(receiver.metric_export_requests(), 0);
    // The log line itself is still written.
    assert!(
        instance
            .stdout()
            .iter()
            .any(|l| l.contains("request failed"))
    );
}

/// Each signal's own endpoint and protocol variables win over the common
/// ones, as for traces; the three signals share the resource.
#[tokio::test]
async fn each_signals_own_endpoint_and_protocol_win() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let config = lab::instance::InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        .env("OTEL_SERVICE_NAME", "own-endpoints")
        .env("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=fixed-2")
        // Spans go nowhere; logs and metrics to the receiver, each its own way.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", dead_url())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            format!("{}/v1/logs", receiver.endpoint()),
        )
        .env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            format!("{}/v1/metrics", receiver.endpoint()),
        )
        .env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, _) = answer.trace_response();
    let logs = receiver
        .wait_for_logs(WAIT, |logs| logs.iter().any(|l| l.trace_id() == trace_id))
        .await
        .unwrap_or_else(|logs| panic!("{logs:#?}"));
    let points = receiver
        .wait_for_metrics(WAIT, |points| {
            points
                .iter()
                .any(|p| p.name == "http.server.request.duration")
        })
        .await
        .unwrap_or_else(|points| panic!("{points:#?}"));
    assert_eq!(
        logs[0].resource_attr("service.instance.id").as_deref(),
        Some("fixed-2")
    );
    assert_eq!(
        points[0].resource_attr("service.instance.id").as_deref(),
        Some("fixed-2")
    );
    assert_eq!(points[0].service, "own-endpoints");
    assert!(
        receiver.spans().is_empty(),
        "spans went to the common endpoint"
    );
}

/// A retried call's attempts and its failure are log records of the
/// request's SERVER span.
#[tokio::test]
async fn retries_and_a_failed_call_are_logged_in_the_request() {
    let receiver = grpc_receiver();
    let config = common(&receiver)
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env("EXTERNAL_CALL_URL", dead_url())
        .env("EXTERNAL_CALL_RETRIES", "1");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, span_id) = answer.trace_response();
    let logs = receiver
        .wait_for_logs(WAIT, |logs| {
            logs.iter().filter(|l| l.trace_id() == trace_id).count() >= 3
        })
        .await
        .unwrap_or_else(|logs| panic!("{logs:#?}"));
    let mine: Vec<&ReceivedLog> = logs.iter().filter(|l| l.trace_id() == trace_id).collect();
    let bodies: Vec<String> = mine.iter().map(|l| l.body()).collect();
    assert!(
        bodies.iter().any(|b| b.starts_with("Retry attempt #0")),
        "{bodies:#?}"
    );
    let call_failed = mine.iter().find(|l| l.body() == "call failed").unwrap();
    assert_eq!(call_failed.attr("status"), None, "no answer, no status");
    assert_eq!(call_failed.attr("timed_out").as_deref(), Some("false"));
    assert!(mine.iter().all(|l| l.span_id() == span_id), "{mine:#?}");
}
