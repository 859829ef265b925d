//! One hop calling two: in parallel the calls overlap, in sequence they don't.

use lab::instance::Instance;
use lab::receiver::ReceivedSpan;

use lab::testing::*;

async fn fan_out(mode: &str) -> (Vec<ReceivedSpan>, serde_json::Value) {
    let receiver = grpc_receiver();
    let left = Instance::spawn(binary(), &common(&receiver).envs(hop("left", 150).env))
        .await
        .unwrap();
    let right = Instance::spawn(binary(), &common(&receiver).envs(hop("right", 150).env))
        .await
        .unwrap();
    let entry_config = common(&receiver)
        .envs(hop("entry", 0).env)
        .env(
            "EXTERNAL_CALL_URL",
            format!("{},{}", left.url(), right.url()),
        )
        .env("EXTERNAL_CALL_MODE", mode);
    let entry = Instance::spawn(binary(), &entry_config).await.unwrap();

    let answer = get(entry.url(), &[]).await;
    assert_eq!(answer.status, 200);
    let (trace_id, _) = answer.trace_response();
    // entry: server, 2 clients, load, render; leaves: server, work, load, render.
    let spans = trace_spans(&receiver, &trace_id, 13).await;
    let json = get_json(entry.url()).await.json();
    let calls: Vec<_> = spans
        .into_iter()
        .filter(|s| s.service == "entry" && s.name() == "GET")
        .collect();
    (calls, json)
}

fn overlap(a: &ReceivedSpan, b: &ReceivedSpan) -> bool {
    a.start_ns() < b.end_ns() && b.start_ns() < a.end_ns()
}

#[tokio::test]
async fn parallel_calls_overlap_in_time() {
    let (calls, json) = fan_out("parallel").await;
    assert_eq!(calls.len(), 2);
    assert!(overlap(&calls[0], &calls[1]), "parallel calls must overlap");
    let downstream = json["downstream"].as_array().unwrap();
    assert_eq!(downstream[0]["hop"]["service"], "left");
    assert_eq!(downstream[1]["hop"]["service"], "right");
}

#[tokio::test]
async fn sequential_calls_follow_each_other() {
    let (calls, json) = fan_out("sequential").await;
    assert_eq!(calls.len(), 2);
    assert!(
        !overlap(&calls[0], &calls[1]),
        "sequential calls must not overlap"
    );
    let downstream = json["downstream"].as_array().unwrap();
    assert_eq!(downstream[0]["hop"]["service"], "left");
    assert_eq!(downstream[1]["hop"]["service"], "right");
    assert!(json["duration_ms"].as_f64().unwrap() >= 300.0, "{json}");
}
