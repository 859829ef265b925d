//! What a client of the chain sees: the page, the JSON, the trace header.

use lab::instance::Instance;

use lab::testing::*;

/// `(data-service, depth)` of every hop part, in document order.
fn hop_parts(html: &str) -> Vec<(String, usize)> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let document = roxmltree::Document::parse_with_options(html, options)
        .unwrap_or_else(|e| panic!("the page is not well-formed: {e}\n{html}"));
    let is_hop = |node: &roxmltree::Node| {
        node.attribute("class")
            .is_some_and(|class| class.split_whitespace().any(|c| c == "hop"))
    };
    document
        .descendants()
        .filter(is_hop)
        .map(|node| {
            let depth = node.ancestors().filter(is_hop).count() - 1;
            let service = node.attribute("data-service").unwrap_or_default();
            (service.to_string(), depth)
        })
        .collect()
}

#[tokio::test]
async fn three_hops_answer_with_one_well_formed_page_of_nested_parts() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;

    let answer = get(chain.entry().url(), &[]).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "text/html; charset=utf-8");
    assert!(answer.body.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        hop_parts(&answer.body),
        vec![
            ("ms-1".to_string(), 0),
            ("ms-2".to_string(), 1),
            ("ms-3".to_string(), 2)
        ]
    );
    let (trace_id, _) = answer.trace_response();
    assert!(
        answer.body.contains(&trace_id),
        "the page shows the trace id"
    );
    assert_eq!(
        answer.body.matches("<html").count(),
        1,
        "one page, not three"
    );
}

#[tokio::test]
async fn three_hops_answer_as_json_when_asked() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;

    let answer = get_json(chain.entry().url()).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let (trace_id, server_span_id) = answer.trace_response();
    let mut hop = answer.json();
    assert_eq!(hop["span_id"], server_span_id.as_str());
    for (i, delay) in DELAYS.iter().enumerate() {
        assert_eq!(hop["service"], format!("ms-{}", i + 1));
        assert_eq!(hop["title"], format!("ms-{}", i + 1));
        assert_eq!(hop["status"], 200);
        assert_eq!(hop["error"], serde_json::Value::Null);
        assert_eq!(hop["trace_id"], trace_id.as_str());
        assert_eq!(hop["response_time_ms"], *delay);
        assert!(hop["duration_ms"].as_f64().unwrap() >= *delay as f64);
        assert_eq!(hop["span_id"].as_str().unwrap().len(), 16);
        let downstream = hop["downstream"].as_array().unwrap().clone();
        if i == 2 {
            assert!(downstream.is_empty());
            break;
        }
        assert_eq!(downstream.len(), 1);
        assert_eq!(downstream[0]["url"], chain.hops[i + 1].url());
        assert_eq!(downstream[0]["status"], 200);
        hop = downstream[0]["hop"].clone();
    }
}

#[tokio::test]
async fn accept_q_values_choose_the_format() {
    let receiver = grpc_receiver();
    let instance = Instance::spawn(binary(), &common(&receiver)).await.unwrap();

    for (accept, content_type) in [
        (
            "application/json;q=0.5, text/html",
            "text/html; charset=utf-8",
        ),
        ("text/html;q=0.5, application/json", "application/json"),
        ("text/html;q=0, */*", "application/json"),
        ("application/json;q=0", "text/html; charset=utf-8"),
        ("text/html, application/json", "application/json"),
    ] {
        let answer = get(instance.url(), &[("accept", accept)]).await;
        assert_eq!(answer.status, 200, "Accept: {accept}");
        assert_eq!(
            answer.headers["content-type"], content_type,
            "Accept: {accept}"
        );
    }
}

/// A next hop outside the chain's control: it answers `body` as HTML, with
/// `x-chain-part` when `marked`.
async fn html_server(body: &'static str, marked: bool) -> String {
    use poem::{EndpointExt as _, Response, Route, handler, web::Data};

    #[handler]
    fn answer(Data((body, marked)): Data<&(&'static str, bool)>) -> Response {
        let mut response = Response::builder().content_type("text/html");
        if *marked {
            response = response.header("x-chain-part", "marked");
        }
        response.body(*body)
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    let app = Route::new().at("/", poem::get(answer)).data((body, marked));
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    url
}

#[tokio::test]
async fn only_an_answer_marked_as_a_part_is_inserted_as_html() {
    let receiver = grpc_receiver();
    let html = "<section class=\"hop\" data-service=\"next\"><b>next</b></section>";
    for marked in [false, true] {
        let next = html_server(html, marked).await;
        let config = common(&receiver)
            .env("OTEL_SERVICE_NAME", "caller")
            .env("EXTERNAL_CALL_URL", &next);
        let caller = Instance::spawn(binary(), &config).await.unwrap();

        let page = get(caller.url(), &[]).await;

        assert_eq!(page.status, 200, "{}", page.body);
        if marked {
            assert!(page.body.contains(html), "{}", page.body);
            assert_eq!(hop_parts(&page.body).len(), 2);
        } else {
            assert!(!page.body.contains("<b>"), "{}", page.body);
            assert!(
                page.body.contains("<pre>&lt;section class="),
                "shown as text: {}",
                page.body
            );
            assert_eq!(hop_parts(&page.body), vec![("caller".to_string(), 0)]);
        }
    }
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let answer = get(
        chain.entry().url(),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.trace_response().0, trace_id);
    let tree = Tree::new(trace_spans(&receiver, trace_id, three_hop_spans()).await);
    assert_eq!(tree.one("ms-1", "GET /").parent_id(), "00f067aa0ba902b7");
    assert!(tree.spans.iter().all(|s| s.trace_id() == trace_id));
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let receiver = grpc_receiver();
    let chain = three_hops(&receiver).await;

    for malformed in [
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "garbage",
    ] {
        let answer = get(chain.entry().url(), &[("traceparent", malformed)]).await;
        assert_eq!(answer.status, 200, "traceparent {malformed}");
        let (trace_id, server_span_id) = answer.trace_response();
        assert_ne!(trace_id, "0".repeat(32));
        let tree = Tree::new(trace_spans(&receiver, &trace_id, three_hop_spans()).await);
        let root = tree.one("ms-1", "GET /");
        assert_eq!(root.span_id(), server_span_id);
        assert_eq!(root.parent_id(), "", "a new trace has a root span");
    }
}

#[tokio::test]
async fn configured_values_are_escaped_in_html() {
    let receiver = grpc_receiver();
    let config = common(&receiver)
        .env("TITLE", "<script>alert('title')</script>")
        .env("OTEL_SERVICE_NAME", "svc\"><b>bold</b>")
        .env(
            "TRACE_LINK",
            "http://grafana.test/explore?a=1&trace=\"{trace_id}\"",
        );
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    assert_eq!(answer.status, 200);
    assert!(!answer.body.contains("<script>"), "{}", answer.body);
    assert!(!answer.body.contains("<b>"), "{}", answer.body);
    assert!(
        answer
            .body
            .contains("&lt;script&gt;alert(&#x27;title&#x27;)&lt;&#x2f;script&gt;")
    );
    assert!(answer.body.contains("a=1&amp;trace=&quot;"));
    // Still a well-formed page with one part.
    assert_eq!(hop_parts(&answer.body).len(), 1);
    // JSON carries the values as they are.
    let json = get_json(instance.url()).await.json();
    assert_eq!(json["title"], "<script>alert('title')</script>");
}

#[tokio::test]
async fn the_trace_link_points_at_the_trace() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("TRACE_LINK", "http://grafana.test/trace/{trace_id}");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, _) = answer.trace_response();
    let link = format!("href=\"http:&#x2f;&#x2f;grafana.test&#x2f;trace&#x2f;{trace_id}\"");
    assert!(answer.body.contains(&link), "{}", answer.body);
}

#[tokio::test]
async fn probes_answer() {
    let receiver = grpc_receiver();
    let instance = Instance::spawn(binary(), &common(&receiver)).await.unwrap();
    let base = instance.url().trim_end_matches('/').to_string();

    let health = get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(
        (health.status.as_u16(), health.body.as_str()),
        (200, "ok\n")
    );
    let ready = get(&format!("{base}/readyz"), &[]).await;
    assert_eq!(
        (ready.status.as_u16(), ready.body.as_str()),
        (200, "ready\n")
    );
}

/// A hop setting goes from its one definition (lab's `HopSpec`, from which
/// the schema and the NixOS options derive) through the hop's environment
/// to the service: here the description, on the page and in the report.
#[tokio::test]
async fn a_hops_description_from_its_chain_file_is_on_its_page() {
    let receiver = grpc_receiver();
    let chain = lab::chain_file::ChainFile::parse(
        r#"{"hops": [{"name": "a", "description": "Looks up <stock> levels"}]}"#,
    )
    .and_then(lab::chain_file::ChainFile::check)
    .unwrap();
    let config = common(&receiver).envs(chain.hops[0].environment(&[]));
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let page = get(instance.url(), &[]).await;
    assert!(
        page.body
            .contains(r#"<p class="description">Looks up &lt;stock&gt; levels</p>"#),
        "{}",
        page.body
    );
    let json = get_json(instance.url()).await.json();
    assert_eq!(json["description"], "Looks up <stock> levels");

    // Without one, neither shows it.
    let plain = Instance::spawn(binary(), &common(&receiver)).await.unwrap();
    assert!(
        !get(plain.url(), &[])
            .await
            .body
            .contains(r#"class="description""#)
    );
    assert!(
        get_json(plain.url())
            .await
            .json()
            .get("description")
            .is_none()
    );
}
