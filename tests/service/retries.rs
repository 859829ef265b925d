//! EXTERNAL_CALL_RETRIES: a failed call is tried again, each attempt with a
//! CLIENT span of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use lab::chain::Chain;
use lab::instance::Instance;
use lab::receiver::{ReceivedSpan, SpanKind};

use lab::testing::*;

/// A next hop that fails its first `failures` requests with 500, then
/// answers as a hop of the chain would.
async fn flaky_server(failures: u32) -> (String, Arc<AtomicU32>) {
    use poem::http::StatusCode;
    use poem::{EndpointExt as _, Response, Route, handler, web::Data};

    #[handler]
    fn answer(Data((seen, failures)): Data<&(Arc<AtomicU32>, u32)>) -> Response {
        let attempt = seen.fetch_add(1, Ordering::SeqCst);
        let status = if attempt < *failures {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        Response::builder()
            .status(status)
            .header("x-chain-part", "flaky")
            .body(format!(
                "<section class=\"hop\">attempt {attempt}</section>"
            ))
    }

    let seen = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    let app = Route::new()
        .at("/", poem::get(answer))
        .data((seen.clone(), failures));
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (url, seen)
}

fn by_start(mut spans: Vec<&ReceivedSpan>) -> Vec<&ReceivedSpan> {
    spans.sort_by_key(|s| s.start_ns());
    spans
}

#[tokio::test]
async fn a_call_that_succeeds_on_the_third_attempt_shows_three_client_spans() {
    let receiver = grpc_receiver();
    let (flaky, seen) = flaky_server(2).await;
    let config = common(&receiver)
        .envs(hop("caller", 0).env)
        .env("EXTERNAL_CALL_URL", &flaky)
        .env("EXTERNAL_CALL_RETRIES", "3");
    let caller = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(caller.url(), &[]).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("attempt 2"), "{}", answer.body);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let (trace_id, _) = answer.trace_response();
    // server, three clients, template load and render.
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 6).await);
    let server = tree.one("caller", "GET /");
    assert!(!server.is_error(), "the call succeeded in the end");
    let attempts = by_start(tree.all("caller", "GET"));
    assert_eq!(attempts.len(), 3, "{:#?}", summary(&tree.spans));
    let statuses: Vec<_> = attempts
        .iter()
        .map(|s| s.attr("http.response.status_code").unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["500", "500", "200"]);
    let errors: Vec<_> = attempts.iter().map(|s| s.is_error()).collect();
    assert_eq!(errors, [true, true, false]);
    let resends: Vec<_> = attempts
        .iter()
        .map(|s| s.attr("http.request.resend_count"))
        .collect();
    assert_eq!(resends, [None, Some("1".into()), Some("2".into())]);
    for (attempt, next) in attempts.iter().zip(attempts.iter().skip(1)) {
        assert_eq!(attempt.parent_id(), server.span_id());
        assert!(
            attempt.end_ns() <= next.start_ns(),
            "one attempt after the other"
        );
    }
}

#[tokio::test]
async fn every_attempt_reaches_the_next_hop_and_the_last_failure_counts() {
    let receiver = grpc_receiver();
    let hops = [
        hop("caller", 0).env("EXTERNAL_CALL_RETRIES", "2"),
        hop("broken", 0).env("ERROR_RATE", "1"),
    ];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let answer = get_json(chain.entry().url()).await;

    assert_eq!(answer.status, 502);
    let (trace_id, _) = answer.trace_response();
    // caller: server + 3 clients; broken: a server span per attempt.
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 7).await);
    let attempts = by_start(tree.all("caller", "GET"));
    assert_eq!(attempts.len(), 3, "{:#?}", summary(&tree.spans));
    assert!(attempts.iter().all(|s| s.is_error()));
    let servers = tree.all("broken", "GET /");
    assert_eq!(servers.len(), 3);
    for server in servers {
        assert_eq!(server.kind(), SpanKind::Server);
        assert!(attempts.iter().any(|a| a.span_id() == server.parent_id()));
    }
    assert!(tree.one("caller", "GET /").is_error());
}

#[tokio::test]
async fn without_retries_a_failed_call_is_made_once() {
    let receiver = grpc_receiver();
    let (flaky, seen) = flaky_server(1).await;
    let config = common(&receiver)
        .envs(hop("caller", 0).env)
        .env("EXTERNAL_CALL_URL", &flaky);
    let caller = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(caller.url(), &[]).await;

    assert_eq!(answer.status, 502);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
