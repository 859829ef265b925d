//! Log lines written inside a request carry its trace and span id.

use lab::instance::Instance;

use lab::testing::*;

#[tokio::test]
async fn text_logs_carry_the_trace_id() {
    let receiver = grpc_receiver();
    let config = common(&receiver).env("ERROR_RATE", "1");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, span_id) = answer.trace_response();
    let stdout = instance.stdout();
    let line = stdout
        .iter()
        .find(|l| l.contains("request failed"))
        .unwrap_or_else(|| panic!("{stdout:#?}"));
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains(&format!("trace_id={trace_id} span_id={span_id}")),
        "{line}"
    );
}

#[tokio::test]
async fn json_logs_are_json_and_carry_the_trace_id() {
    let receiver = grpc_receiver();
    let config = common(&receiver)
        .env("ERROR_RATE", "1")
        .env("LOG_FORMAT", "json");
    let instance = Instance::spawn(binary(), &config).await.unwrap();

    let answer = get(instance.url(), &[]).await;

    let (trace_id, span_id) = answer.trace_response();
    let lines: Vec<serde_json::Value> = instance
        .stdout()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "request failed")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["trace_id"], trace_id.as_str());
    assert_eq!(failed["span_id"], span_id.as_str());
    assert_eq!(failed["status"], 500);
    assert!(lines.iter().any(|l| l["message"] == "listening"));
}
