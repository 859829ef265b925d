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
async fn spans_and_log_records_also_go_to_a_collector() {
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
    // Each hop's `request handled`, under a span of the trace, with its
    // resource and the bridge's scope as the hop sent them.
    let span_ids: Vec<String> = spans.iter().map(|s| s.span_id()).collect();
    let handled = |log: &lab::receiver::ReceivedLog| {
        log.trace_id() == trace_id && log.body() == "request handled"
    };
    let logs = collector
        .wait_for_logs(Duration::from_secs(10), |logs| {
            logs.iter().filter(|l| handled(l)).count() >= 2
        })
        .await
        .expect("both hops' log records reach the collector");
    for log in logs.iter().filter(|l| handled(l)) {
        assert!(span_ids.contains(&log.span_id()), "{log:?}");
        assert!(log.resource_attr("service.name").is_some(), "{log:?}");
        assert!(log.scope.is_some(), "{log:?}");
    }
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

/// The exercise files copied into a directory of their own, every hop on a
/// free port (`LAB_EXERCISES_DIR` for the runner); removed when dropped.
struct FreePortExercises(std::path::PathBuf);

impl FreePortExercises {
    fn new() -> Self {
        let dir = lab::testing::temp_path("lab-exercises");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(lab::exercises::directory()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let mut file: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for hop in file["hops"].as_array_mut().unwrap() {
                hop["port"] = 0.into();
            }
            std::fs::write(dir.join(path.file_name().unwrap()), file.to_string()).unwrap();
        }
        Self(dir)
    }

    async fn start(&self, exercise: &str) -> Lab {
        Lab::start_with_env(
            &["--exercise", exercise],
            &[("LAB_EXERCISES_DIR", self.0.to_str().unwrap())],
        )
        .await
    }
}

impl Drop for FreePortExercises {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each span of a waterfall (its tree text) with the attributes printed
/// under it, if any: the line under it without a bar, tree drawing trimmed.
fn attributes_under(waterfall: &[String]) -> Vec<(String, Option<String>)> {
    let lines = &waterfall[1..];
    let mut spans = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if lab::runner::waterfall::bar_of(line).is_none() {
            continue;
        }
        let tree = lab::runner::waterfall::tree_of(line).unwrap().to_string();
        let under = lines
            .get(i + 1)
            .filter(|next| lab::runner::waterfall::bar_of(next).is_none())
            .and_then(|next| lab::runner::waterfall::tree_of(next))
            .map(|text| text.trim_start_matches(['│', ' ']).to_string());
        spans.push((tree, under));
    }
    spans
}

/// The attributes under the spans whose tree text ends with `name`.
fn under_spans(waterfall: &[String], name: &str) -> Vec<Option<String>> {
    attributes_under(waterfall)
        .into_iter()
        .filter(|(tree, _)| tree.ends_with(name))
        .map(|(_, under)| under)
        .collect()
}

/// The attributes under `service`'s CLIENT spans (`GET`, failed or not).
fn under_calls(waterfall: &[String], service: &str) -> Vec<Option<String>> {
    let call = format!("{service} GET");
    attributes_under(waterfall)
        .into_iter()
        .filter(|(tree, _)| tree.ends_with(&call) || tree.ends_with(&format!("{call}  ERROR")))
        .map(|(_, under)| under)
        .collect()
}

#[tokio::test]
async fn baggage_shows_the_customer_under_every_hops_server_span() {
    let exercises = FreePortExercises::new();
    let mut lab = exercises.start("baggage").await;
    let entry = lab.entry_url().await;

    let trace_id = request(&entry).await;
    let waterfall = lab.waterfall(&trace_id).await;

    let text = waterfall.join("\n");
    let servers: Vec<Option<String>> = ["1", "2", "3"]
        .iter()
        .flat_map(|hop| under_spans(&waterfall, &format!("microservice-{hop} GET /")))
        .collect();
    assert_eq!(
        servers,
        vec![Some("lab.customer=alice".to_string()); 3],
        "{text}"
    );
    // Only the SERVER spans record baggage.
    assert_eq!(text.matches("lab.customer=").count(), 3, "{text}");
    assert!(
        lab.output()
            .iter()
            .any(|l| l == "Printed under the spans (--attributes): baggage (lab.customer)."),
        "{:#?}",
        lab.output()
    );
    lab.stop().await;
}

/// Requests to `entry` until the waterfall of one answered `status` passes
/// `pick`; that waterfall.
async fn waterfall_where(
    lab: &Lab,
    entry: &str,
    status: u16,
    pick: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    for _ in 0..8 {
        for answer in lab::testing::requests(entry, 8, 4).await {
            if answer.status != status {
                continue;
            }
            let waterfall = lab.waterfall(&answer.trace_id).await;
            if pick(&waterfall) {
                return waterfall;
            }
        }
    }
    panic!(
        "no request answered {status} with the waterfall wanted among 64:\n{}",
        lab.output().join("\n")
    );
}

#[tokio::test]
async fn retries_show_each_attempts_resend_count() {
    let exercises = FreePortExercises::new();
    let mut lab = exercises.start("retries").await;
    let entry = lab.entry_url().await;

    // A request that needed a retry: a second GET under microservice-2.
    let waterfall = waterfall_where(&lab, &entry, 200, |w| {
        under_calls(w, "microservice-2").len() > 1
    })
    .await;

    let text = waterfall.join("\n");
    let attempts = under_calls(&waterfall, "microservice-2");
    let retries: Vec<Option<String>> = (1..attempts.len())
        .map(|k| Some(format!("http.request.resend_count={k}")))
        .collect();
    assert_eq!(attempts[0], None, "the first attempt is no resend: {text}");
    assert_eq!(attempts[1..], retries[..], "{text}");
    // Every attempt but the last failed in microservice-3.
    let failed = under_spans(
        &waterfall,
        "microservice-3 GET /  ERROR injected failure (ERROR_RATE=0.5)",
    );
    assert_eq!(
        failed,
        vec![Some("error.type=injected_failure".to_string()); attempts.len() - 1],
        "{text}"
    );
    lab.stop().await;
}

#[tokio::test]
async fn errors_show_where_the_failure_started_and_how_it_travelled() {
    let exercises = FreePortExercises::new();
    let mut lab = exercises.start("errors").await;
    let entry = lab.entry_url().await;

    let waterfall = waterfall_where(&lab, &entry, 502, |_| true).await;

    let text = waterfall.join("\n");
    let servers: Vec<(String, Option<String>)> = attributes_under(&waterfall)
        .into_iter()
        .filter(|(tree, _)| tree.contains(" GET /"))
        .collect();
    let under: Vec<Option<&str>> = servers.iter().map(|(_, u)| u.as_deref()).collect();
    assert_eq!(
        under,
        [
            Some("error.type=downstream_failed  http.response.status_code=502"),
            Some("error.type=downstream_failed  http.response.status_code=502"),
            Some("error.type=injected_failure  http.response.status_code=500"),
        ],
        "{text}"
    );
    // The CLIENT spans have the status they got, and no error.type.
    assert_eq!(
        under_calls(&waterfall, "microservice-2"),
        [Some("http.response.status_code=500".to_string())],
        "{text}"
    );
    lab.stop().await;
}

/// The first line `lab` printed that starts with `prefix`, waiting for it
/// up to a report interval and then some.
async fn line_starting(lab: &Lab, prefix: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = lab.output().into_iter().find(|l| l.starts_with(prefix)) {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line `{prefix}…` within 30 s:\n{}",
            lab.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A waterfall header's trace id and duration in ms.
fn header_of(line: &str) -> Option<(String, f64)> {
    let rest = line.strip_prefix("trace ")?;
    let id = rest.split(' ').next()?.to_string();
    let duration = rest.split(" · ").nth(2)?;
    let ms = match duration.strip_suffix(" ms") {
        Some(ms) => ms.parse().ok()?,
        None => duration.strip_suffix(" µs")?.parse::<f64>().ok()? / 1000.0,
    };
    Some((id, ms))
}

#[tokio::test]
async fn each_load_report_draws_the_loads_slowest_trace() {
    // Jitter: the load's requests take 5 to 75 ms.
    let chain =
        chain_file(r#"{"hops": [{"name": "a", "port": 0, "responseTime": 40, "jitter": 35}]}"#);
    let mut quiet = Lab::start(&["--chain", chain.path(), "--load", "20"]).await;
    let mut shown = Lab::start(&["--chain", chain.path(), "--load", "20", "--show-load"]).await;
    let (named, named_shown) = tokio::join!(
        line_starting(&quiet, "load: the slowest, trace "),
        line_starting(&shown, "load: the slowest, trace "),
    );

    // Without --show-load: the one trace drawn, after the report, is it.
    let id = named["load: the slowest, trace ".len()..]
        .split(' ')
        .next()
        .unwrap();
    let waterfall = quiet.waterfall(id).await;
    assert!(
        waterfall[0].ends_with("· the load's slowest in 10 s"),
        "{}",
        waterfall.join("\n")
    );
    let (_, ms) = header_of(&waterfall[0]).unwrap();
    assert!(
        named.contains(&format!("({ms:.1} ms):")),
        "{named}\n{}",
        waterfall[0]
    );
    let output = quiet.output();
    let drawn: Vec<&String> = output.iter().filter(|l| l.starts_with("trace ")).collect();
    assert_eq!(drawn.len(), 1, "{output:#?}");

    // With --show-load every trace is drawn: the one named is the longest
    // of those drawn before the report.
    let output = shown.output();
    let report = output.iter().position(|l| *l == named_shown).unwrap();
    let drawn: Vec<(String, f64)> = output[..report]
        .iter()
        .filter_map(|l| header_of(l))
        .collect();
    assert!(drawn.len() >= 100, "20/s for 10 s: {} traces", drawn.len());
    let longest = drawn.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    let named_id = named_shown["load: the slowest, trace ".len()..]
        .split(' ')
        .next()
        .unwrap();
    let named_ms = drawn
        .iter()
        .find(|(id, _)| id == named_id)
        .map(|(_, ms)| *ms);
    assert_eq!(named_ms, Some(longest), "{named_shown}");
    assert!(named_shown.ends_with(", is drawn above"), "{named_shown}");
    quiet.stop().await;
    shown.stop().await;
}
