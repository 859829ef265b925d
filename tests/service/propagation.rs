//! What travels with a call to the next hop: the trace context, or nothing
//! (PROPAGATION=none), and baggage that a hop adds (BAGGAGE) and every hop
//! records on its server span.

use lab::chain::Chain;
use lab::instance::Instance;
use lab::receiver::SpanKind;

use crate::spans::capture_server;
use lab::testing::*;

#[tokio::test]
async fn a_hop_without_propagation_splits_the_trace_in_two() {
    let receiver = grpc_receiver();
    let hops = [
        hop("front", 0),
        hop("mute", 0).env("PROPAGATION", "none"),
        hop("back", 0),
    ];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let answer = get_json(chain.entry().url()).await;
    assert_eq!(answer.status, 200);
    let (trace_id, _) = answer.trace_response();

    // The caller's trace: front's server and client, mute's server and client.
    let caller = Tree::new(trace_spans(&receiver, &trace_id, 4).await);
    let mute_server = caller.one("mute", "GET /");
    assert_eq!(
        mute_server.parent_id(),
        caller.one("front", "GET").span_id()
    );
    let mute_client = caller.one("mute", "GET");
    assert_eq!(mute_client.parent_id(), mute_server.span_id());
    assert!(
        caller.all("back", "GET /").is_empty(),
        "back is not in the caller's trace"
    );

    // back started a trace of its own: a root span, another trace id.
    let spans = receiver
        .wait_until(SPAN_WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.service == "back" && s.kind() == SpanKind::Server)
        })
        .await
        .expect("back's server span arrives");
    let back = spans
        .iter()
        .find(|s| s.service == "back" && s.kind() == SpanKind::Server)
        .unwrap();
    assert_ne!(back.trace_id(), trace_id);
    assert_eq!(back.parent_id(), "", "a root span");
}

#[tokio::test]
async fn without_propagation_no_trace_context_goes_on_the_wire() {
    let receiver = grpc_receiver();
    let (next, mut captured) = capture_server().await;
    let config = common(&receiver)
        .env("PROPAGATION", "none")
        .env("EXTERNAL_CALL_URL", &next);
    let instance = Instance::spawn(binary(), &config).await.unwrap();

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
    // The hop itself still continued the trace it was given.
    assert_eq!(
        answer.trace_response().0,
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let headers = captured.recv().await.expect("the next hop was called");
    for header in ["traceparent", "tracestate", "baggage"] {
        assert!(
            !headers.contains_key(header),
            "{header} was sent: {headers:?}"
        );
    }
    assert_eq!(headers.get("x-chain-hops").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn baggage_set_at_the_entry_is_on_every_hops_server_span() {
    let receiver = grpc_receiver();
    let hops = [
        hop("front", 0).env("BAGGAGE", "lab.customer=alice, lab.tier=gold"),
        hop("middle", 0),
        hop("back", 0),
    ];
    let chain = Chain::start(binary(), &common(&receiver), &hops)
        .await
        .unwrap();

    let answer = get_json(chain.entry().url()).await;
    let (trace_id, _) = answer.trace_response();

    let tree = Tree::new(trace_spans(&receiver, &trace_id, 5).await);
    for service in ["front", "middle", "back"] {
        let server = tree.one(service, "GET /");
        assert_eq!(
            server.attr("lab.customer").as_deref(),
            Some("alice"),
            "{service}"
        );
        assert_eq!(
            server.attr("lab.tier").as_deref(),
            Some("gold"),
            "{service}"
        );
    }
    // Only server spans record it: the baggage is what a hop received.
    assert_eq!(tree.one("front", "GET").attr("lab.customer"), None);
}

#[tokio::test]
async fn configured_baggage_joins_the_baggage_that_came_in() {
    let receiver = grpc_receiver();
    let (next, mut captured) = capture_server().await;
    let config = common(&receiver)
        .envs(hop("joiner", 0).env)
        .env("BAGGAGE", "lab.customer=alice")
        .env("EXTERNAL_CALL_URL", &next);
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[("baggage", "lab.session=s-42")]).await;

    let headers = captured.recv().await.expect("the next hop was called");
    let mut sent: Vec<&str> = headers["baggage"].split(',').map(str::trim).collect();
    sent.sort_unstable();
    assert_eq!(sent, ["lab.customer=alice", "lab.session=s-42"]);
    let (trace_id, _) = answer.trace_response();
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 4).await);
    let server = tree.one("joiner", "GET /");
    assert_eq!(server.attr("lab.session").as_deref(), Some("s-42"));
    assert_eq!(server.attr("lab.customer").as_deref(), Some("alice"));
}
