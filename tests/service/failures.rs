//! Failing next hops, injected failures and loops: the right status, an
//! answer that says what failed, and ERROR spans.

use lab::chain::Chain;
use lab::instance::{Instance, InstanceConfig};
use lab::receiver::SpanKind;

use lab::testing::*;

#[tokio::test]
async fn an_unreachable_next_hop_gives_502_naming_the_url() {
    let receiver = grpc_receiver();
    let dead = dead_url();
    let config = common(&receiver)
        .envs(hop("entry", 0).env)
        .env("EXTERNAL_CALL_URL", &dead);
    let entry = Instance::spawn(binary(), &config).await.unwrap();

    let page = get(entry.url(), &[]).await;
    assert_eq!(page.status, 502);
    assert!(
        page.body.contains(&dead.replace('/', "&#x2f;")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Connection refused"), "{}", page.body);
    assert!(
        page.body.contains("data-service=\"entry\""),
        "this hop's part is still there"
    );

    let json = get_json(entry.url()).await;
    assert_eq!(json.status, 502);
    let report = json.json();
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains(&dead) && error.contains("refused"),
        "{error}"
    );
    assert_eq!(report["downstream"][0]["status"], serde_json::Value::Null);

    let (trace_id, _) = page.trace_response();
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 4).await);
    let server = tree.one("entry", "GET /");
    assert!(server.is_error());
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("502")
    );
    assert_eq!(
        server.attr("error.type").as_deref(),
        Some("downstream_failed")
    );
    assert!(
        server.status_message().contains(&dead),
        "{}",
        server.status_message()
    );
    let client = tree.one("entry", "GET");
    assert_eq!(client.kind(), SpanKind::Client);
    assert!(client.is_error());
}

#[tokio::test]
async fn a_failing_next_hop_gives_502_with_its_part() {
    let receiver = grpc_receiver();
    let hops = [hop("entry", 0), hop("broken", 0).env("ERROR_RATE", "1")];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let page = get(chain.entry().url(), &[]).await;

    assert_eq!(page.status, 502);
    assert!(
        page.body
            .contains("data-service=\"broken\" data-status=\"500\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("injected failure"), "{}", page.body);
    assert!(page.body.contains("answered 500"), "{}", page.body);
    let (trace_id, _) = page.trace_response();
    // entry: server, client, load, render; broken: server, load, render.
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 7).await);
    assert!(tree.one("entry", "GET /").is_error());
    let client = tree.one("entry", "GET");
    assert!(client.is_error());
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("500")
    );
    let broken = tree.one("broken", "GET /");
    assert!(broken.is_error());
    assert_eq!(
        broken.attr("error.type").as_deref(),
        Some("injected_failure")
    );
}

#[tokio::test]
async fn a_slow_next_hop_gives_504_after_the_timeout() {
    let receiver = grpc_receiver();
    let hops = [
        hop("entry", 0).env("EXTERNAL_CALL_TIMEOUT", "200"),
        hop("slow", 3_000),
    ];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let json = get_json(chain.entry().url()).await;

    assert_eq!(json.status, 504);
    let report = json.json();
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("timed out after 200 ms"), "{error}");
    assert!(error.contains(chain.hops[1].url()), "{error}");
    assert!(
        report["duration_ms"].as_f64().unwrap() < 3_000.0,
        "no waiting for the slow hop"
    );
    let (trace_id, _) = json.trace_response();
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 2).await);
    let server = tree.one("entry", "GET /");
    assert!(server.is_error());
    assert_eq!(
        server.attr("error.type").as_deref(),
        Some("downstream_timeout")
    );
    assert!(tree.one("entry", "GET").is_error());
}

#[tokio::test]
async fn the_page_tells_a_failed_call_once() {
    let receiver = grpc_receiver();
    let hops = [
        hop("entry", 0).env("EXTERNAL_CALL_TIMEOUT", "200"),
        hop("slow", 3_000),
    ];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();
    let page = get(chain.entry().url(), &[]).await;
    assert_eq!(page.status, 504);
    assert_eq!(
        page.body.matches("timed out after 200 ms").count(),
        1,
        "{}",
        page.body
    );
    assert!(page.body.contains("class=\"hop failed\""), "{}", page.body);

    let dead = dead_url();
    let config = common(&receiver)
        .envs(hop("entry", 0).env)
        .env("EXTERNAL_CALL_URL", &dead);
    let entry = Instance::spawn(binary(), &config).await.unwrap();
    let page = get(entry.url(), &[]).await;
    assert_eq!(page.status, 502);
    assert_eq!(
        page.body.matches("Connection refused").count(),
        1,
        "{}",
        page.body
    );
}

#[tokio::test]
async fn error_rate_one_fails_every_request_on_purpose() {
    let receiver = grpc_receiver();
    let config = common(&receiver)
        .envs(hop("flaky", 5).env)
        .env("ERROR_RATE", "1.0");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    for _ in 0..3 {
        let page = get(instance.url(), &[]).await;
        assert_eq!(page.status, 500);
        assert!(page.body.contains("class=\"hop failed\""), "{}", page.body);
        assert!(
            page.body.contains("injected failure (ERROR_RATE=1)"),
            "{}",
            page.body
        );
        let (trace_id, _) = page.trace_response();
        let tree = Tree::new(trace_spans(&receiver, &trace_id, 4).await);
        let server = tree.one("flaky", "GET /");
        assert!(server.is_error());
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("500")
        );
        assert!(server.status_message().contains("injected failure"));
        // It failed after doing its work.
        assert_eq!(tree.all("flaky", "simulated work").len(), 1);
    }
}

#[tokio::test]
async fn error_rate_zero_never_fails() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("ERROR_RATE", "0");
    let instance = Instance::spawn(binary(), &config).await.unwrap();
    for _ in 0..20 {
        assert_eq!(get(instance.url(), &[]).await.status, 200);
    }
}

#[tokio::test]
async fn a_chain_looped_onto_itself_is_stopped_with_508() {
    let receiver = grpc_receiver();
    let addr = lab::instance::unused_local_addr();
    let own_url = format!("http://{addr}/");
    let config = InstanceConfig::new()
        .envs(common(&receiver).env)
        .env("OTEL_SERVICE_NAME", "loop")
        .env("HTTP_PORT", addr.port().to_string())
        .env("EXTERNAL_CALL_URL", &own_url)
        .env("MAX_HOPS", "3");
    let instance = Instance::spawn(binary(), &config).await.unwrap();
    assert_eq!(instance.url(), own_url);

    let json = get_json(instance.url()).await;

    assert_eq!(json.status, 502);
    // Visits 0, 1, 2 and 3; the fourth has passed MAX_HOPS=3 and calls nobody.
    let mut hop = json.json();
    let mut statuses = vec![hop["status"].as_u64().unwrap()];
    while let Some(next) = hop["downstream"][0]["hop"].as_object() {
        statuses.push(next["status"].as_u64().unwrap());
        hop = serde_json::Value::Object(next.clone());
    }
    assert_eq!(statuses, vec![502, 502, 502, 508]);
    assert!(hop["downstream"].as_array().unwrap().is_empty());
    assert!(hop["error"].as_str().unwrap().contains("MAX_HOPS=3"));

    let (trace_id, _) = json.trace_response();
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 4 + 3).await);
    let servers = tree.all("loop", "GET /");
    assert_eq!(servers.len(), 4);
    assert_eq!(
        tree.all("loop", "GET").len(),
        3,
        "the refused visit calls nobody"
    );
    let refused = servers
        .iter()
        .find(|s| s.attr("http.response.status_code").as_deref() == Some("508"))
        .expect("a 508 server span");
    assert!(refused.is_error());
    assert_eq!(refused.attr("error.type").as_deref(), Some("too_many_hops"));
}
