//! The collector's troubles are never the request's: no collector, a hung
//! one, a restarted one; and shutdown still delivers the last spans.

use std::time::{Duration, Instant};

use lab::instance::{Instance, InstanceConfig};
use lab::receiver::{OtlpReceiver, Protocol};

use lab::testing::*;

fn without_collector(addr: std::net::SocketAddr, protocol: Protocol) -> InstanceConfig {
    InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        .env("OTEL_SERVICE_NAME", "lonely")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.env_value())
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

#[tokio::test]
async fn without_a_collector_requests_succeed_and_the_outage_is_logged_once() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let collector = lab::instance::unused_local_addr();
        let instance = Instance::spawn(binary(), &without_collector(collector, protocol))
            .await
            .unwrap();

        // Several export batches (one per 100 ms) fail while requests go on.
        for _ in 0..5 {
            assert_eq!(get(instance.url(), &[]).await.status, 200);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(
            count(&instance.stdout(), "span export failed"),
            1,
            "{:#?}",
            instance.stdout()
        );
        for outage in ["log record export failed", "metric export failed"] {
            assert_eq!(
                count(&instance.stdout(), outage),
                1,
                "{outage}: {:#?}",
                instance.stdout()
            );
        }
        assert_eq!(
            count(&instance.stdout(), "ERROR"),
            0,
            "{:#?}",
            instance.stdout()
        );

        // The collector comes up where it was expected: spans flow again.
        let receiver = OtlpReceiver::start_at(protocol, collector).unwrap();
        let answer = get(instance.url(), &[]).await;
        let (trace_id, _) = answer.trace_response();
        trace_spans(&receiver, &trace_id, 3).await;
        let recovered = [
            "span export recovered",
            "log record export recovered",
            "metric export recovered",
        ];
        let deadline = std::time::Instant::now() + SPAN_WAIT;
        while recovered.iter().any(|r| count(&instance.stdout(), r) == 0)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for recovered in [
            "span export recovered",
            "log record export recovered",
            "metric export recovered",
        ] {
            assert_eq!(
                count(&instance.stdout(), recovered),
                1,
                "{recovered}: {:#?}",
                instance.stdout()
            );
        }
    }
}

#[tokio::test]
async fn sigterm_right_after_a_request_still_delivers_its_spans() {
    let receiver = grpc_receiver();
    // Only the shutdown flush can deliver within this test.
    let config = common(&receiver).env("OTEL_BSP_SCHEDULE_DELAY", "60000");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;
    instance.terminate().unwrap();
    let status = instance
        .wait(Duration::from_secs(10))
        .await
        .expect("it exits");

    assert!(status.success(), "{status:?}");
    let (trace_id, _) = answer.trace_response();
    assert_eq!(
        receiver
            .spans()
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .count(),
        3,
        "server, template load and render"
    );
    assert_eq!(
        count(&instance.stdout(), "spans flushed: every span delivered"),
        1,
        "{:#?}",
        instance.stdout()
    );
}

#[tokio::test]
async fn shutdown_says_how_many_spans_never_reached_the_collector() {
    let collector = lab::instance::unused_local_addr();
    let config =
        without_collector(collector, Protocol::HttpProtobuf).env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();
    for _ in 0..2 {
        assert_eq!(get(instance.url(), &[]).await.status, 200);
    }
    instance.terminate().unwrap();
    let status = instance.wait(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // Two requests of server, template load and render spans each.
    let stdout = instance.stdout();
    assert_eq!(
        count(
            &stdout,
            "6 of 6 spans could not be delivered to the collector"
        ),
        1,
        "{stdout:#?}"
    );
    assert_eq!(count(&stdout, "spans flushed"), 0, "{stdout:#?}");
}

#[tokio::test]
async fn requests_in_flight_finish_after_sigterm() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("RESPONSE_TIME", "700");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();

    let url = instance.url().to_string();
    let request = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    instance.terminate().unwrap();

    let answer = request.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        instance
            .wait(Duration::from_secs(10))
            .await
            .expect("it exits")
            .success()
    );
    let (trace_id, _) = answer.trace_response();
    assert!(
        receiver
            .spans()
            .iter()
            .any(|s| s.trace_id() == trace_id && s.name() == "GET /")
    );
}

#[tokio::test]
async fn a_hung_collector_neither_slows_requests_nor_holds_shutdown() {
    let receiver = grpc_receiver();
    receiver.set_hang(true);
    let mut instance = Instance::spawn(binary(), &common(&receiver)).await.unwrap();

    for _ in 0..5 {
        assert_eq!(get(instance.url(), &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        receiver.export_requests() >= 1,
        "the exporter reached the collector"
    );

    let stopping = Instant::now();
    instance.terminate().unwrap();
    let status = instance
        .wait(Duration::from_secs(15))
        .await
        .expect("it exits");
    let took = stopping.elapsed();
    assert!(status.success());
    // Bounded by the service's own flush timeout (1.5 s, every signal at
    // once), not the exporter's 10 s nor the meter provider's fixed 5 s.
    assert!(
        receiver.log_export_requests() >= 1,
        "log records went to the hung collector too"
    );
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}

#[tokio::test]
async fn both_otlp_protocols_deliver_spans() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let receiver = OtlpReceiver::start(protocol).unwrap();
        let instance = Instance::spawn(binary(), &common(&receiver).envs(hop("proto", 1).env))
            .await
            .unwrap();

        let answer = get(instance.url(), &[]).await;

        let (trace_id, span_id) = answer.trace_response();
        let spans = trace_spans(&receiver, &trace_id, 4).await;
        let server = spans
            .iter()
            .find(|s| s.span_id() == span_id)
            .expect("the server span");
        assert_eq!(server.service, "proto", "{protocol:?}");
    }
}

#[tokio::test]
async fn sampled_out_requests_export_nothing_but_keep_the_trace_id() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("OTEL_TRACES_SAMPLER", "always_off");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;
    assert_eq!(answer.status, 200);
    let value = answer.headers["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(value.ends_with("-00"), "not sampled: {value}");
    instance.terminate().unwrap();
    instance.wait(Duration::from_secs(10)).await;
    assert_eq!(receiver.span_count(), 0);
}

#[tokio::test]
async fn with_the_sdk_disabled_the_chain_still_answers_and_passes_context_on() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("OTEL_SDK_DISABLED", "true");
    let mut instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(
        instance.url(),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;

    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    instance.terminate().unwrap();
    instance.wait(Duration::from_secs(10)).await;
    assert_eq!(receiver.span_count(), 0);
}

#[tokio::test]
async fn the_console_exporter_prints_spans_on_stderr() {
    let config = InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        .env("OTEL_SERVICE_NAME", "console")
        .env("RESPONSE_TIME", "1")
        .env("OTEL_TRACES_EXPORTER", "console");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, span_id) = answer.trace_response();
    let server_line = format!("span={span_id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !instance.stderr().iter().any(|l| l.contains(&server_line)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = instance.stderr();
    let line = stderr
        .iter()
        .find(|l| l.contains(&server_line))
        .unwrap_or_else(|| panic!("no server span on stderr: {stderr:#?}"));
    assert!(line.starts_with("span console Server \"GET /\""), "{line}");
    assert!(line.contains(&format!("trace={trace_id}")));
    assert!(line.contains("http.response.status_code=200"));
    assert!(stderr.iter().any(|l| l.contains("\"simulated work\"")));
}

#[tokio::test]
async fn the_standard_otel_variables_are_honoured() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let config = InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        // The generic settings point nowhere; the traces-specific ones win.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", dead_url())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/v1/traces", receiver.endpoint()),
        )
        .env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=lab,service.instance.id=fixed-1",
        )
        .env("OTEL_SERVICE_NAME", "standard");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, span_id) = answer.trace_response();
    let spans = trace_spans(&receiver, &trace_id, 3).await;
    let server = spans.iter().find(|s| s.span_id() == span_id).unwrap();
    assert_eq!(
        server.resource_attr("service.name").as_deref(),
        Some("standard")
    );
    assert_eq!(
        server
            .resource_attr("deployment.environment.name")
            .as_deref(),
        Some("lab")
    );
    assert_eq!(
        server.resource_attr("service.instance.id").as_deref(),
        Some("fixed-1")
    );
}

/// `count` JSON requests; each leaves one span on a single hop without delay.
async fn send_json_requests(url: &str, count: usize) {
    for _ in 0..count {
        assert_eq!(get_json(url).await.status, 200);
    }
}

/// Spans received once at least `count` arrived, or after SPAN_WAIT.
async fn received_at_least(receiver: &OtlpReceiver, count: usize) -> usize {
    match receiver
        .wait_until(SPAN_WAIT, |spans| spans.len() >= count)
        .await
    {
        Ok(spans) | Err(spans) => spans.len(),
    }
}

#[tokio::test]
async fn spans_leave_in_batches_of_128_unless_the_environment_says_otherwise() {
    // A schedule delay of a minute: within the test, only a full batch
    // sends spans, and an export takes at most a batch.
    let config = |receiver: &OtlpReceiver| {
        common(receiver)
            .env("OTEL_SERVICE_NAME", "batches")
            .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
    };
    let batch = microservice::telemetry::DEFAULT_EXPORT_BATCH_SIZE;
    assert_eq!(batch, 128);

    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let instance = Instance::spawn(binary(), &config(&receiver)).await.unwrap();
    send_json_requests(instance.url(), 3 * batch).await;
    let received = received_at_least(&receiver, 2 * batch).await;
    assert!(received >= 2 * batch, "{received} spans arrived");
    assert!(
        receiver.export_requests() as usize >= received.div_ceil(batch),
        "{received} spans in {} exports: more than {batch} in one",
        receiver.export_requests()
    );

    // The SDK's own variable still decides when it is set: 190 spans are
    // not a batch of 200, 210 are.
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let instance = Instance::spawn(
        binary(),
        &config(&receiver).env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200"),
    )
    .await
    .unwrap();
    send_json_requests(instance.url(), 190).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.span_count(), 0, "exported before a batch of 200");
    send_json_requests(instance.url(), 20).await;
    let received = received_at_least(&receiver, 200).await;
    assert!(received >= 200, "{received} spans arrived");
}
