//! `lab --logs`: the log records of each hop are printed under the span
//! they were written in.

// Tests fail loudly: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use lab::runner::waterfall::tree_of;
use lab::testing::request;
use lab::testing::runner::*;

#[tokio::test]
async fn a_failed_requests_log_lines_are_under_their_spans() {
    let json = r#"{"hops": [
          {"name": "1", "port": 0},
          {"name": "2", "port": 0, "errorRate": 1}]}"#;
    let chain = chain_file(json);
    let mut lab = Lab::start(&["--chain", chain.path(), "--logs"]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;

    let trees: Vec<&str> = waterfall[1..].iter().filter_map(|l| tree_of(l)).collect();
    let text = waterfall.join("\n");
    // The log lines right under a span's line.
    let under = |span: &str| {
        let at = trees
            .iter()
            .position(|t| t.ends_with(span) || t.contains(&format!("{span}  ERROR")))
            .unwrap_or_else(|| panic!("no {span:?} line:\n{text}"));
        trees[at + 1..]
            .iter()
            .take_while(|t| t.contains("· "))
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
    };
    let first = under("microservice-1 GET /");
    assert_eq!(first.len(), 2, "{first:#?}\n{text}");
    assert!(
        first[0].starts_with("│  · WARN call failed url=http://"),
        "{text}"
    );
    assert!(
        first[1].starts_with("│  · WARN request failed status=502 error.type=downstream_failed"),
        "{text}"
    );
    let second = under("microservice-2 GET /");
    assert_eq!(second.len(), 1, "{second:#?}\n{text}");
    assert!(
        second[0].contains("· WARN request failed status=500 error.type=injected_failure"),
        "{text}"
    );
    lab.stop().await;
}

#[tokio::test]
async fn without_logs_no_log_line_is_drawn() {
    let json = r#"{"hops": [{"name": "1", "port": 0, "errorRate": 1}]}"#;
    let chain = chain_file(json);
    let mut lab = Lab::start(&["--chain", chain.path()]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;

    assert!(
        !waterfall.iter().any(|l| l.contains("request failed")),
        "{}",
        waterfall.join("\n")
    );
    lab.stop().await;
}
