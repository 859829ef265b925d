//! Each exercise's signature, from the spans its chain really exports: the
//! chain of `exercises/<name>.json` started as processes (on free ports),
//! real requests, an in-process OTLP receiver.

// Tests fail loudly: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lab::chain::{Chain, STOP_TIMEOUT};
use lab::exercises::{self, Exercise};
use lab::instance::InstanceConfig;
use lab::receiver::{OtlpReceiver, Protocol, ReceivedSpan, SpanKind};
use lab::testing::{Request, SPAN_WAIT, all, binary, one, requests, trace_spans};
use lab::trace::{Format, Trace, expected_spans};

struct Running {
    exercise: Exercise,
    receiver: OtlpReceiver,
    chain: Chain,
}

impl Running {
    async fn start(name: &str) -> Self {
        let mut exercise = exercises::find(&exercises::directory(), name).unwrap();
        for hop in &mut exercise.topology.hops {
            hop.port = 0;
        }
        let receiver = OtlpReceiver::start(Protocol::Grpc).unwrap();
        let common = InstanceConfig::new().envs(receiver.env());
        let chain = Chain::start_topology(binary(), &common, &exercise.topology)
            .await
            .unwrap();
        Self {
            exercise,
            receiver,
            chain,
        }
    }

    fn entry(&self) -> String {
        self.chain.entry().url().to_string()
    }

    /// Spans of one request's trace through the exercise's chain.
    fn spans_per_request(&self) -> usize {
        expected_spans(&self.exercise.topology, Format::Html).total()
    }

    /// Waits until `trace_id` has at least `count` spans; gives them all.
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<ReceivedSpan> {
        trace_spans(&self.receiver, trace_id, count).await
    }

    /// As [`Running::trace`], then a moment more for spans of the same
    /// trace still on their way (a retry's extra attempts, say).
    async fn settled_trace(&self, trace_id: &str, count: usize) -> Vec<ReceivedSpan> {
        self.trace(trace_id, count).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }

    async fn stop(mut self) {
        self.chain.stop(STOP_TIMEOUT).await;
    }
}

fn millis(span: &ReceivedSpan) -> f64 {
    span.duration().as_secs_f64() * 1000.0
}

const ONE: &str = "microservice-1";
const TWO: &str = "microservice-2";
const THREE: &str = "microservice-3";

#[tokio::test]
async fn baseline_is_one_trace_of_three_hops_where_the_300_ms_add_up() {
    let lab = Running::start("baseline").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;

    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, HashSet::from([ONE, TWO, THREE]));
    let work: Vec<f64> = [ONE, TWO, THREE]
        .iter()
        .map(|s| millis(one(&spans, s, "simulated work")))
        .collect();
    assert!(
        work[0] >= 50.0 && work[1] >= 100.0 && work[2] >= 150.0,
        "{work:?}"
    );
    assert!(millis(one(&spans, ONE, "GET /")) >= 300.0);
    lab.stop().await;
}

#[tokio::test]
async fn slow_hop_makes_microservice_2_the_bottleneck() {
    let lab = Running::start("slow-hop").await;
    for answer in requests(&lab.entry(), 3, 3).await {
        let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
        let work = one(&spans, TWO, "simulated work");
        assert!(millis(work) >= 400.0, "{} ms", millis(work));
        // Of the spans that do work themselves (no children), it is the longest.
        let parents: HashSet<String> = spans.iter().map(|s| s.parent_id()).collect();
        let longest_leaf = spans
            .iter()
            .filter(|s| !parents.contains(&s.span_id()))
            .max_by_key(|s| s.duration())
            .unwrap();
        assert_eq!(
            (longest_leaf.service.as_str(), longest_leaf.name()),
            (TWO, "simulated work")
        );
    }
    lab.stop().await;
}

#[tokio::test]
async fn errors_start_at_the_leaf_and_travel_up_as_502() {
    let lab = Running::start("errors").await;
    // 30 % fail: among 40 requests there are failures and successes
    // (the chance of either missing is below one in a million).
    let answers = requests(&lab.entry(), 40, 8).await;
    assert!(answers.iter().any(|a| a.status == 200));
    let failed = answers.iter().find(|a| a.status != 200).expect("a failure");
    assert_eq!(failed.status, 502);

    let spans = lab.trace(&failed.trace_id, lab.spans_per_request()).await;
    let leaf = one(&spans, THREE, "GET /");
    assert!(leaf.is_error());
    assert_eq!(leaf.attr("error.type").as_deref(), Some("injected_failure"));
    assert!(one(&spans, TWO, "GET").is_error());
    for service in [TWO, ONE] {
        let server = one(&spans, service, "GET /");
        assert!(server.is_error(), "{service}");
        assert_eq!(
            server.attr("error.type").as_deref(),
            Some("downstream_failed")
        );
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("502")
        );
    }
    lab.stop().await;
}

/// (start, end) of microservice-1's two calls, in ns.
fn calls_of_the_entry(spans: &[ReceivedSpan]) -> Vec<(u64, u64)> {
    all(spans, ONE, "GET")
        .iter()
        .map(|s| (s.start_ns(), s.end_ns()))
        .collect()
}

#[tokio::test]
async fn fan_out_in_parallel_takes_the_longest_call_not_the_sum() {
    let lab = Running::start("fan-out").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    // entry: server, work, 2 clients, load, render; leaves: 4 each.
    let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
    let calls = calls_of_the_entry(&spans);
    assert_eq!(calls.len(), 2);
    assert!(
        calls[0].0 < calls[1].1 && calls[1].0 < calls[0].1,
        "the calls overlap"
    );
    let total = millis(one(&spans, ONE, "GET /"));
    assert!(
        (200.0..290.0).contains(&total),
        "50 + max(100, 150) ms, not the sum: {total}"
    );
    lab.stop().await;
}

#[tokio::test]
async fn fan_out_sequential_takes_the_sum() {
    let lab = Running::start("fan-out-sequential").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
    let calls = calls_of_the_entry(&spans);
    assert!(calls[0].1 <= calls[1].0, "one after the other");
    assert!(millis(one(&spans, ONE, "GET /")) >= 300.0);
    lab.stop().await;
}

#[tokio::test]
async fn timeout_cuts_the_client_span_while_the_leaf_works_on() {
    let lab = Running::start("timeout").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    assert_eq!(
        answer.status, 502,
        "microservice-1 passes the 504 up as 502"
    );

    // The leaf's spans arrive about a second later than the others.
    let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
    let client = one(&spans, TWO, "GET");
    assert!(client.is_error());
    assert!(
        (200.0..400.0).contains(&millis(client)),
        "cut at 200 ms: {}",
        millis(client)
    );
    assert_eq!(
        one(&spans, TWO, "GET /").attr("error.type").as_deref(),
        Some("downstream_timeout")
    );
    let leaf = one(&spans, THREE, "GET /");
    assert_eq!(leaf.parent_id(), client.span_id());
    assert!(millis(leaf) >= 1000.0);
    assert!(
        leaf.end_ns() > client.end_ns() + 500_000_000,
        "the leaf ends long after its caller gave up"
    );
    lab.stop().await;
}

#[tokio::test]
async fn retries_show_a_client_span_per_attempt() {
    let lab = Running::start("retries").await;
    // Half the attempts fail: among 30 requests some needed a retry.
    let answers = requests(&lab.entry(), 30, 6).await;
    let mut retried = None;
    for answer in &answers {
        let spans = lab
            .settled_trace(&answer.trace_id, lab.spans_per_request())
            .await;
        if all(&spans, TWO, "GET").len() > 1 {
            retried = Some((answer, spans));
            break;
        }
    }
    let (answer, spans) = retried.expect("a request that needed a retry");
    let attempts = all(&spans, TWO, "GET");
    let leaf_servers = all(&spans, THREE, "GET /");
    assert_eq!(
        leaf_servers.len(),
        attempts.len(),
        "every attempt reached the leaf"
    );
    for (number, attempt) in attempts.iter().enumerate() {
        let last = number + 1 == attempts.len();
        let expected_resends = (number > 0).then(|| number.to_string());
        assert_eq!(attempt.attr("http.request.resend_count"), expected_resends);
        assert!(
            leaf_servers
                .iter()
                .any(|s| s.parent_id() == attempt.span_id())
        );
        if !last {
            assert!(
                attempt.is_error(),
                "attempt {number} failed, so it was retried"
            );
            assert_eq!(
                attempt.attr("http.response.status_code").as_deref(),
                Some("500")
            );
        }
    }
    let succeeded = !attempts.last().unwrap().is_error();
    assert_eq!(answer.status == 200, succeeded);
    lab.stop().await;
}

#[tokio::test]
async fn broken_propagation_splits_one_request_into_two_traces() {
    let lab = Running::start("broken-propagation").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    assert_eq!(answer.status, 200);

    let caller = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
    assert!(
        caller.iter().all(|s| s.service != THREE),
        "microservice-3 is not in the caller's trace"
    );
    let client = one(&caller, TWO, "GET");
    let orphans = lab
        .receiver
        .wait_until(SPAN_WAIT, |spans| spans.iter().any(|s| s.service == THREE))
        .await
        .expect("microservice-3's spans arrive");
    let leaf = orphans
        .iter()
        .find(|s| s.service == THREE && s.kind() == SpanKind::Server)
        .unwrap();
    assert_ne!(leaf.trace_id(), answer.trace_id, "a trace of its own");
    assert_eq!(leaf.parent_id(), "", "its root");
    assert_ne!(leaf.parent_id(), client.span_id());
    lab.stop().await;
}

/// For each trace id of `answers`: which services sent spans.
async fn services_per_trace(
    lab: &Running,
    answers: &[Request],
    sampled_spans: usize,
) -> HashMap<String, HashSet<String>> {
    for answer in answers.iter().filter(|a| a.sampled) {
        lab.trace(&answer.trace_id, sampled_spans).await;
    }
    // Whatever else is coming has had time to arrive.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut services: HashMap<String, HashSet<String>> = HashMap::new();
    for span in lab.receiver.spans() {
        services
            .entry(span.trace_id())
            .or_default()
            .insert(span.service.clone());
    }
    services
}

#[tokio::test]
async fn head_sampling_keeps_or_drops_whole_traces() {
    let lab = Running::start("sampling").await;
    let answers = requests(&lab.entry(), 120, 16).await;
    let sampled = answers.iter().filter(|a| a.sampled).count();
    // 25 % of 120 is 30; the bounds are 4 standard deviations away.
    assert!((11..=49).contains(&sampled), "{sampled} of 120 sampled");

    let services = services_per_trace(&lab, &answers, lab.spans_per_request()).await;
    for answer in &answers {
        let got = services.get(&answer.trace_id).cloned().unwrap_or_default();
        if answer.sampled {
            assert_eq!(got.len(), 3, "a kept trace is complete: {got:?}");
        } else {
            assert!(
                got.is_empty(),
                "a dropped trace is dropped by every hop: {got:?}"
            );
        }
    }
    lab.stop().await;
}

#[tokio::test]
async fn independent_sampling_leaves_traces_with_holes() {
    let lab = Running::start("sampling-independent").await;
    let answers = requests(&lab.entry(), 120, 16).await;

    let services = services_per_trace(&lab, &answers, lab.spans_per_request()).await;
    let mut rootless = 0;
    for answer in &answers {
        let got = services.get(&answer.trace_id).cloned().unwrap_or_default();
        if answer.sampled {
            assert_eq!(
                got.len(),
                3,
                "what the entry keeps, microservice-2 keeps too: {got:?}"
            );
        } else if !got.is_empty() {
            assert!(!got.contains(ONE), "{got:?}");
            assert!(got.contains(TWO) && got.contains(THREE), "{got:?}");
            rootless += 1;
        }
    }
    // A third of the traces the entry drops are kept from microservice-2 on.
    assert!(
        rootless > 0,
        "no trace without its root among {} dropped",
        answers.len()
    );
    lab.stop().await;
}

#[tokio::test]
async fn baggage_reaches_every_hop() {
    let lab = Running::start("baggage").await;
    let answer = &requests(&lab.entry(), 1, 1).await[0];
    let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
    for service in [ONE, TWO, THREE] {
        let server = one(&spans, service, "GET /");
        assert_eq!(
            server.attr("lab.customer").as_deref(),
            Some("alice"),
            "{service}"
        );
    }
    lab.stop().await;
}

#[tokio::test]
async fn tail_sampling_keeps_every_error_and_every_slow_trace() {
    let lab = Running::start("tail-sampling").await;
    let policy = lab.exercise.tail_sampling().unwrap().expect("policies");
    let answers = requests(&lab.entry(), 60, 12).await;
    let (mut kept, mut errors, mut slow) = (0, 0, 0);
    for answer in &answers {
        let spans = lab.trace(&answer.trace_id, lab.spans_per_request()).await;
        let trace = Trace {
            id: answer.trace_id.clone(),
            spans,
            late: None,
        };
        let (keep, note) = policy.decide(&trace);
        let is_slow = trace.duration() >= Duration::from_millis(400);
        if trace.has_error() {
            errors += 1;
            assert!(keep && note.contains("errors"), "{note}");
        }
        if is_slow {
            slow += 1;
            assert!(keep && note.contains("slow"), "{note}");
        }
        if !keep {
            assert!(!trace.has_error() && !is_slow);
        }
        kept += usize::from(keep);
    }
    assert!(errors + slow > 0, "the chain makes errors and slow traces");
    assert!(
        kept < answers.len(),
        "healthy fast traces are mostly dropped"
    );
    lab.stop().await;
}
