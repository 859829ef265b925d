//! The lab runner as a user starts it: the real `lab` binary, real hop
//! processes on free ports, real requests; what it prints is read back.

// Tests fail loudly: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lab::chain_file::ChainFile;
use lab::testing::request;
use lab::testing::runner::*;
use lab::trace::{Format, expected_spans};

/// Spans of a request for the page through the chain file `json`.
fn html_spans(json: &str) -> usize {
    let chain = ChainFile::parse(json).unwrap().check().unwrap();
    expected_spans(&chain, Format::Html).total()
}

/// The tree column of each line of the waterfall of `trace_id`.
fn waterfall_trees(waterfall: &[String]) -> Vec<String> {
    waterfall[1..]
        .iter()
        .filter_map(|line| lab::runner::waterfall::tree_of(line))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_trace_of_a_request_is_drawn_with_every_span_in_place() {
    let json = r#"{"hops": [
          {"name": "1", "port": 0, "responseTime": 30},
          {"name": "2", "port": 0, "responseTime": 20},
          {"name": "3", "port": 0, "responseTime": 10}]}"#;
    let chain = chain_file(json);
    let mut lab = Lab::start(&["--chain", chain.path()]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;

    assert!(
        waterfall[0].contains(&format!("· {} spans ·", html_spans(json))),
        "{}",
        waterfall.join("\n")
    );
    assert_eq!(
        waterfall_trees(&waterfall),
        [
            "microservice-1 GET /",
            "├─ microservice-1 simulated work",
            "├─ microservice-1 GET",
            "│  └─ microservice-2 GET /",
            "│     ├─ microservice-2 simulated work",
            "│     ├─ microservice-2 GET",
            "│     │  └─ microservice-3 GET /",
            "│     │     ├─ microservice-3 simulated work",
            "│     │     ├─ microservice-3 template load",
            "│     │     └─ microservice-3 template render",
            "│     ├─ microservice-2 template load",
            "│     └─ microservice-2 template render",
            "├─ microservice-1 template load",
            "└─ microservice-1 template render",
        ],
        "{}",
        waterfall.join("\n")
    );
    // Piped output is plain text.
    assert!(!lab.output().iter().any(|line| line.contains('\x1b')));
    lab.stop().await;
}

#[tokio::test]
async fn a_four_hop_chain_file_fans_out_in_parallel() {
    let json = r#"{"hops": [
          {"name": "gateway", "port": 0, "responseTime": 5, "calls": ["catalog", "pricing"], "callMode": "parallel"},
          {"name": "catalog", "port": 0, "responseTime": 200, "calls": []},
          {"name": "pricing", "port": 0, "responseTime": 100},
          {"name": "stock", "port": 0, "responseTime": 100}]}"#;
    let chain = chain_file(json);
    let mut lab = Lab::start(&["--chain", chain.path()]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;

    let trees = waterfall_trees(&waterfall);
    let text = waterfall.join("\n");
    assert_eq!(trees.len(), html_spans(json), "{text}");
    assert_eq!(trees[0], "microservice-gateway GET /");
    let calls: Vec<usize> = trees
        .iter()
        .enumerate()
        .filter(|(_, tree)| *tree == "├─ microservice-gateway GET")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(calls.len(), 2, "{text}");
    assert_eq!(trees[calls[0] + 1], "│  └─ microservice-catalog GET /");
    assert_eq!(trees[calls[1] + 1], "│  └─ microservice-pricing GET /");
    assert!(
        trees.contains(&"│     │  └─ microservice-stock GET /".to_string()),
        "{text}"
    );
    // In parallel: the two calls' bars overlap.
    let (a, b) = (
        bar_span(&waterfall[calls[0] + 1]),
        bar_span(&waterfall[calls[1] + 1]),
    );
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the calls do not overlap: {a:?} {b:?}\n{text}"
    );
    lab.stop().await;
}

#[tokio::test]
async fn a_callee_that_outlives_its_caller_is_drawn_late_under_it() {
    let chain = chain_file(
        r#"{"hops": [
          {"name": "caller", "port": 0, "callTimeout": 100},
          {"name": "slow", "port": 0, "responseTime": 2000}]}"#,
    );
    // The callee ends long after the runner drew its caller's trace.
    let mut lab = Lab::start(&["--chain", chain.path()]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;
    let late = lab.late_waterfall(&trace_id).await;
    let (text, late_text) = (waterfall.join("\n"), late.join("\n"));

    // The call that timed out names its id; the late part hangs from it.
    let call = waterfall
        .iter()
        .find_map(|line| line.split("microservice-caller GET  (span ").nth(1))
        .unwrap_or_else(|| panic!("the failed call shows no span id:\n{text}"));
    let id = call.split(':').next().unwrap();
    assert!(
        call.starts_with(&format!("{id}: no callee span here)")),
        "{text}"
    );
    let trees = waterfall_trees(&late);
    assert!(
        trees[0].starts_with(&format!(
            "microservice-caller GET  (span {id}, drawn above)"
        )),
        "{text}\n{late_text}"
    );
    assert_eq!(trees[1], "└─ microservice-slow GET /", "{late_text}");
    // On the trace's time scale the callee's bar runs on past its caller's.
    let (caller, callee) = (bar_span(&late[1]), bar_span(&late[2]));
    assert!(
        caller.0 <= callee.0 && callee.1 > caller.1 + 10,
        "{caller:?} {callee:?}\n{late_text}"
    );
    lab.stop().await;
}

#[tokio::test]
async fn after_sigterm_no_hop_process_is_left() {
    let chain = chain_file(
        r#"{"hops": [{"name": "a", "port": 0}, {"name": "b", "port": 0}, {"name": "c", "port": 0}]}"#,
    );
    let mut lab = Lab::start(&["--chain", chain.path()]).await;
    let entry = lab.entry_url().await;
    let trace_id = request(&entry).await;
    let hops = children_of(lab.pid());
    assert_eq!(hops.len(), 3, "three hop processes: {hops:?}");

    let status = lab.stop().await;

    assert!(status.success(), "{status:?}");
    for pid in hops {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "hop {pid} is still there"
        );
    }
    // Stopping flushed the spans: the last request's trace was drawn.
    assert!(
        lab.output()
            .iter()
            .any(|line| line.starts_with(&format!("trace {trace_id}")))
    );
    assert!(
        lab.output()
            .iter()
            .any(|line| line == "lab: stopped 3 hops")
    );
}

#[tokio::test]
async fn a_taken_port_is_named_and_the_hops_already_started_are_stopped() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let leaf_port = free_port();
    let chain = chain_file(&format!(
        r#"{{"hops": [{{"name": "front", "port": {taken_port}}}, {{"name": "leaf", "port": {leaf_port}}}]}}"#
    ));

    let (status, output) = run_to_end(&["--chain", chain.path()]).await;

    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "hop `front` (microservice-front) could not start: port {taken_port} is taken"
        )),
        "{output}"
    );
    assert!(
        output.contains("the 1 hop already started was stopped"),
        "{output}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", leaf_port)).is_err(),
        "the leaf still listens"
    );
}

#[tokio::test]
async fn bad_chain_files_are_refused_before_anything_starts() {
    for (json, message) in [
        (
            r#"{"hops": [{"name": "a", "calls": ["ghost"]}]}"#,
            "hop `a` calls unknown hop `ghost`",
        ),
        (
            r#"{"hops": [{"name": "a", "port": 9999}, {"name": "b", "port": 9999}]}"#,
            "port 9999 is used by more than one hop: `a`, `b`",
        ),
        (
            r#"{"hops": [{"name": "a", "port": 0}, {"name": "b", "port": 0, "calls": ["a"]}]}"#,
            "hops `a` → `b` → `a` form a cycle",
        ),
        (
            r#"{"hops": [{"name": "a", "respnseTime": 1}]}"#,
            "unknown field `respnseTime`",
        ),
        ("not json", "expected ident"),
    ] {
        let chain = chain_file(json);
        let (status, output) = run_to_end(&["--chain", chain.path()]).await;
        assert_eq!(status.code(), Some(1), "{json}: {output}");
        assert!(output.contains(message), "{json}: {output}");
        assert!(output.contains(chain.path()), "names the file: {output}");
        assert!(
            !output.contains("their spans come here"),
            "nothing started: {output}"
        );
    }
    let (status, output) = run_to_end(&["--chain", "/nonexistent/chain.json"]).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains("cannot read the chain file /nonexistent/chain.json"),
        "{output}"
    );
}

#[tokio::test]
async fn spans_also_go_to_a_collector() {
    let collector =
        lab::receiver::OtlpReceiver::start(lab::receiver::Protocol::HttpProtobuf).unwrap();
    let json = r#"{"hops": [{"name": "a", "port": 0}, {"name": "b", "port": 0}]}"#;
    let chain = chain_file(json);
    let mut lab = Lab::start(&[
        "--chain",
        chain.path(),
        "--otlp-endpoint",
        &collector.endpoint(),
    ])
    .await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    lab.waterfall(&trace_id).await;

    let spans = collector
        .wait_until(Duration::from_secs(10), |spans| {
            spans.iter().filter(|s| s.trace_id() == trace_id).count() >= html_spans(json)
        })
        .await
        .expect("the trace's spans reach the collector");
    let services: std::collections::BTreeSet<_> = spans
        .iter()
        .filter(|s| s.trace_id() == trace_id)
        .map(|s| s.resource_attr("service.name").unwrap_or_default())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["microservice-a", "microservice-b"]
    );
    lab.stop().await;
}

#[tokio::test]
async fn the_runners_own_load_is_counted_not_drawn() {
    let chain = chain_file(r#"{"hops": [{"name": "a", "port": 0}]}"#);
    let mut lab = Lab::start(&["--chain", chain.path(), "--load", "20"]).await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    lab.waterfall(&trace_id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let drawn = lab
        .output()
        .iter()
        .filter(|l| l.starts_with("trace "))
        .count();
    assert_eq!(drawn, 1, "only the test's own request: {:#?}", lab.output());
    lab.stop().await;
}
