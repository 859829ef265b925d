//! The trace of one request through three hops, as a person would read it in
//! Tempo: one trace, parent links across hops, kinds, names and attributes.

use std::time::Duration;

use lab::receiver::SpanKind;

use lab::testing::*;

#[tokio::test]
async fn a_three_hop_request_makes_one_linked_trace() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;

    let answer = get(chain.entry().url(), &[("user-agent", "lab-test/1")]).await;
    assert_eq!(answer.status, 200);
    let (trace_id, entry_span_id) = answer.trace_response();

    // Per hop: server, simulated work, template load + render; a client span
    // per call.
    let expected = three_hop_spans();
    let spans = trace_spans(&receiver, &trace_id, expected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tree = Tree::new(
        receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect(),
    );
    assert_eq!(tree.spans.len(), expected, "{:#?}", summary(&tree.spans));
    assert_eq!(spans.len(), expected);

    let server = |service: &str| tree.one(service, "GET /");
    let client = |service: &str| tree.one(service, "GET");

    // The parent links: 1 SERVER → 1 CLIENT → 2 SERVER → 2 CLIENT → 3 SERVER.
    assert_eq!(server("ms-1").span_id(), entry_span_id);
    assert_eq!(server("ms-1").parent_id(), "");
    assert_eq!(client("ms-1").parent_id(), server("ms-1").span_id());
    assert_eq!(server("ms-2").parent_id(), client("ms-1").span_id());
    assert_eq!(client("ms-2").parent_id(), server("ms-2").span_id());
    assert_eq!(server("ms-3").parent_id(), client("ms-2").span_id());
    assert!(
        tree.all("ms-3", "GET").is_empty(),
        "the last hop calls nobody"
    );

    for (i, delay) in DELAYS.iter().enumerate() {
        let service = format!("ms-{}", i + 1);
        let server = server(&service);
        let port = chain.hops[i]
            .url()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap();

        assert_eq!(server.kind(), SpanKind::Server);
        assert!(!server.is_error());
        assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(server.attr("http.route").as_deref(), Some("/"));
        assert_eq!(server.attr("url.path").as_deref(), Some("/"));
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(server.attr("server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(server.attr("server.port").as_deref(), Some(port));
        // Numbers stay numbers, so that TraceQL can compare them.
        assert_eq!(server.int_attr("http.response.status_code"), Some(200));
        assert_eq!(server.int_attr("server.port"), port.parse().ok());
        // The caller's end of the connection: loopback here.
        assert_eq!(
            server.attr("network.peer.address").as_deref(),
            Some("127.0.0.1")
        );
        assert!(server.int_attr("network.peer.port").is_some_and(|p| p > 0));
        let user_agent = server.attr("user_agent.original").unwrap_or_default();
        if i == 0 {
            assert_eq!(user_agent, "lab-test/1");
        } else {
            assert!(user_agent.starts_with("microservice/"), "{user_agent}");
        }

        let work = tree.one(&service, "simulated work");
        assert_eq!(work.parent_id(), server.span_id());
        assert_eq!(work.kind(), SpanKind::Internal);
        assert_eq!(work.int_attr("lab.response_time_ms"), Some(*delay as i64));
        assert!(
            work.duration() >= Duration::from_millis(*delay),
            "{service}: simulated work took {:?}, configured {delay} ms",
            work.duration()
        );

        let render = tree.one(&service, "template render");
        assert_eq!(render.parent_id(), server.span_id());
        let template = if i == 0 { "page.html" } else { "part.html" };
        assert_eq!(render.attr("template.name").as_deref(), Some(template));

        // The templates were compiled at start-up and have not changed since.
        let load = tree.one(&service, "template load");
        assert_eq!(load.parent_id(), server.span_id());
        assert_eq!(load.attr("template.name").as_deref(), Some(template));
        assert_eq!(load.attr("template.cached").as_deref(), Some("true"));
        assert_eq!(load.attr("template.bytes"), None);
        assert!(
            load.end_ns() <= render.start_ns(),
            "{service} loads, then renders"
        );

        // Resource: who sent the span.
        assert_eq!(server.resource_attr("service.name"), Some(service.clone()));
        for key in ["service.version", "service.instance.id", "host.name"] {
            assert!(server.resource_attr(key).is_some(), "{service} lacks {key}");
        }
    }

    for (i, next) in chain.hops.iter().enumerate().skip(1) {
        let client = client(&format!("ms-{i}"));
        assert_eq!(client.kind(), SpanKind::Client);
        assert!(!client.is_error());
        assert_eq!(client.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(client.attr("url.full").as_deref(), Some(next.url()));
        assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
        let user_agent = client.attr("user_agent.original").unwrap_or_default();
        assert!(user_agent.starts_with("microservice/"), "{user_agent:?}");
        assert_eq!(
            client.attr("http.response.status_code").as_deref(),
            Some("200")
        );
    }

    // Every hop's instance is its own: distinct service.instance.id.
    let instances: std::collections::HashSet<_> = tree
        .spans
        .iter()
        .filter_map(|s| s.resource_attr("service.instance.id"))
        .collect();
    assert_eq!(instances.len(), 3);
}

#[tokio::test]
async fn json_requests_are_traced_without_templates() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;

    let answer = get_json(chain.entry().url()).await;

    let (trace_id, _) = answer.trace_response();
    // server + work per hop, a client span on the first two.
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 8).await);
    assert_eq!(tree.spans.len(), 8, "{:#?}", summary(&tree.spans));
    assert!(tree.spans.iter().all(|s| !s.name().starts_with("template")));
}

#[tokio::test]
async fn baggage_travels_with_the_trace_context() {
    let receiver = grpc_receiver();
    let (capture_url, mut captured) = capture_server().await;
    let config = common(&receiver).env("EXTERNAL_CALL_URL", &capture_url);
    let instance = lab::instance::Instance::spawn(binary(), &config)
        .await
        .unwrap();

    let answer = get(
        instance.url(),
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("baggage", "lab.user=alice"),
        ],
    )
    .await;

    assert_eq!(answer.status, 200);
    let headers = captured.recv().await.expect("the next hop was called");
    let traceparent = headers.get("traceparent").expect("traceparent sent on");
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new parent: the client span"
    );
    assert_eq!(
        headers.get("baggage").map(String::as_str),
        Some("lab.user=alice")
    );
    assert_eq!(headers.get("x-chain-hops").map(String::as_str), Some("1"));
}

/// A next hop that records the headers of each request it gets.
pub async fn capture_server() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<std::collections::HashMap<String, String>>,
) {
    use poem::{EndpointExt as _, Request, Route, handler, web::Data};
    type Sender = tokio::sync::mpsc::UnboundedSender<std::collections::HashMap<String, String>>;

    #[handler]
    fn record(request: &Request, Data(sender): Data<&Sender>) -> &'static str {
        let headers = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let _ = sender.send(headers);
        "captured"
    }

    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    let app = Route::new()
        .at("/", poem::get(record).post(record))
        .data(sender);
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (url, receiver)
}

#[tokio::test]
async fn post_calls_make_post_spans() {
    let receiver = grpc_receiver();
    let hops = [
        hop("front", 0).env("EXTERNAL_CALL_METHOD", "POST"),
        hop("back", 0),
    ];
    let chain = lab::chain::Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let answer = get(chain.entry().url(), &[]).await;

    assert_eq!(answer.status, 200);
    let (trace_id, _) = answer.trace_response();
    // front: server, client, load, render; back: server, load, render.
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 7).await);
    let client = tree.one("front", "POST");
    assert_eq!(client.attr("http.request.method").as_deref(), Some("POST"));
    let server = tree.one("back", "POST /");
    assert_eq!(server.parent_id(), client.span_id());
    assert_eq!(server.attr("http.request.method").as_deref(), Some("POST"));
}
