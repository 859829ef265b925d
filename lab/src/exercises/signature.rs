//! An exercise's signature: what the traces of its requests must show, as
//! data in its file (`"signature"`), checked by [`Signature::check`] against
//! the spans the chain really exported (lab/tests/exercises.rs).
//!
//! What the chain implies is derived, not written. For every request's trace:
//! - its spans are [`crate::trace::expected_spans`]'s, rooted at the entry's
//!   SERVER span, each callee's SERVER span under a CLIENT span of a caller;
//! - a hop with `propagation: none` starts a trace of its own per call,
//!   rooted at the callee's SERVER span;
//! - `simulated work` lasts at least the hop's `responseTime - jitter`;
//! - a span is OK unless `errors` names it; every request is sampled.
//!
//! What the file states. A span is `<hop>.server`, `<hop>.work` or
//! `<hop>.client` (`*.server`: every hop's); times are milliseconds.
//!
//! | field | meaning |
//! |---|---|
//! | `requests`, `concurrency` | requests to send, how many at once (1, 1) |
//! | `answers` | per HTTP status a request may get, its trace's shape (below); each status is seen at least once unless `optional: true` |
//! | `sampled` | `{share, within}`: the share of requests the entry samples |
//! | `unsampledKeptFrom` | a hop that samples on its own: some traces the entry dropped are kept from it on |
//! | `retries` | `{call, failedStatus}`: a CLIENT span repeated per attempt; attempt k has `http.request.resend_count = k`, all but the last failed with `failedStatus`, each calls again; some request retried |
//! | `tracesPerRequest` | how many traces a request leaves: the chain's number, stated for the reader |
//! | `tailSampling` | `{keptBy, dropsSome}`: the collector's `status_code`/`latency` policies that keep every trace they match; some traces dropped |
//! | `slowest` | `{longestSelfTime, spreadMs}`: the slowest request's trace (what an exemplar points to) works longest in that span, and took at least `spreadMs` more than the fastest |
//!
//! A trace's shape, under `answers."<status>"`:
//!
//! | field | meaning |
//! |---|---|
//! | `errors` | span → its `error.type` (null: any): exactly these are ERROR |
//! | `attributes` | span → attribute → value |
//! | `durations` | span → `{min, max}` |
//! | `logs` | span → the lines its hop wrote inside it, each `"<SEVERITY> <start of the message>"`; (whatever the file states, every line that carries a trace id must name a span of that trace) |
//! | `timing` | `{"overlap": span}` they run at once; `{"inTurn": span}` each after the previous; `{"outlives": {child, parent, byMs}}`; `{"longestSelfTime": span}` no span works longer outside its children |
//!
//! For example, a request through `timeout` answers 502, with
//! `"timing": [{"outlives": {"child": "3.server", "parent": "2.client", "byMs": 500}}]`.
//! A variant may give its own signature, which replaces its exercise's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::chain_file::{Propagation, Topology};
use crate::receiver::{ReceivedLog, ReceivedSpan};
use crate::trace::expected::{CLIENT, SERVER, WORK};
use crate::trace::tail_sampling::{Rule, TailSampling};
use crate::trace::{Format, Trace, expected_spans};

mod logs;
use logs::LogLine;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    #[serde(default = "one")]
    pub requests: usize,
    #[serde(default = "one")]
    pub concurrency: usize,
    pub answers: BTreeMap<u16, Shape>,
    #[serde(default)]
    pub sampled: Option<Share>,
    #[serde(default)]
    pub unsampled_kept_from: Option<String>,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub traces_per_request: Option<usize>,
    #[serde(default)]
    pub tail_sampling: Option<TailKeeps>,
    #[serde(default)]
    pub slowest: Option<Slowest>,
}

fn one() -> usize {
    1
}

/// The trace of a request that got one status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shape {
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub errors: BTreeMap<Selector, Option<String>>,
    #[serde(default)]
    pub attributes: BTreeMap<Selector, BTreeMap<String, Value>>,
    #[serde(default)]
    pub durations: BTreeMap<Selector, Bounds>,
    #[serde(default)]
    pub logs: BTreeMap<Selector, Vec<LogLine>>,
    #[serde(default)]
    pub timing: Vec<Timing>,
}

/// Milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Timing {
    Overlap(Selector),
    InTurn(Selector),
    #[serde(rename_all = "camelCase")]
    Outlives {
        child: Selector,
        parent: Selector,
        by_ms: f64,
    },
    LongestSelfTime(Selector),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub share: f64,
    pub within: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    pub call: Selector,
    pub failed_status: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TailKeeps {
    pub kept_by: Vec<String>,
    #[serde(default)]
    pub drops_some: bool,
}

/// The outlier among the requests' traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Slowest {
    pub longest_self_time: Selector,
    pub spread_ms: f64,
}

/// A span of a hop, `<hop>.<kind>`; `*` for every hop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Selector {
    hop: Option<String>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Server,
    Work,
    Client,
}

impl Kind {
    /// The span's name.
    fn name(self) -> &'static str {
        match self {
            Kind::Server => SERVER,
            Kind::Work => WORK,
            Kind::Client => CLIENT,
        }
    }
}

impl TryFrom<String> for Selector {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let wrong = || {
            format!(
                "`{text}` names no span: write `<hop>.server`, `<hop>.work` or \
                 `<hop>.client` (`*` for every hop)"
            )
        };
        let (hop, kind) = text.rsplit_once('.').ok_or_else(wrong)?;
        let kind = match kind {
            "server" => Kind::Server,
            "work" => Kind::Work,
            "client" => Kind::Client,
            _ => return Err(wrong()),
        };
        let hop = (hop != "*").then(|| hop.to_string());
        Ok(Self { hop, kind })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Server => "server",
            Kind::Work => "work",
            Kind::Client => "client",
        };
        write!(f, "{}.{kind}", self.hop.as_deref().unwrap_or("*"))
    }
}

impl Selector {
    /// The spans of `spans` it names, earliest first.
    fn pick<'a>(&self, chain: &Topology, spans: &[&'a ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
        let service = match &self.hop {
            // A hop the chain lacks names nothing (`validate` refuses it).
            Some(hop) => match hop_index(chain, hop) {
                Some(index) => Some(chain.service_name(index)),
                None => return Vec::new(),
            },
            None => None,
        };
        let mut found: Vec<&ReceivedSpan> = spans
            .iter()
            .copied()
            .filter(|s| {
                s.name() == self.kind.name() && service.as_ref().is_none_or(|n| &s.service == n)
            })
            .collect();
        found.sort_by_key(|s| s.start_ns());
        found
    }
}

fn hop_index(chain: &Topology, hop: &str) -> Option<usize> {
    chain.hops.iter().position(|h| h.name == hop)
}

/// What a request came back with.
#[derive(Debug, Clone)]
pub struct Answered {
    pub status: u16,
    pub trace_id: String,
    /// The entry sampled it (the `traceresponse` flags).
    pub sampled: bool,
}

impl Signature {
    /// Refuses a hop or policy name the exercise does not have.
    pub fn validate(&self, chain: &Topology, tail: Option<&TailSampling>) -> anyhow::Result<()> {
        let known = |hop: &str| -> anyhow::Result<()> {
            anyhow::ensure!(
                hop_index(chain, hop).is_some(),
                "signature: no hop `{hop}` in the chain"
            );
            Ok(())
        };
        let mut selectors: Vec<&Selector> = Vec::new();
        for shape in self.answers.values() {
            selectors.extend(shape.errors.keys());
            selectors.extend(shape.attributes.keys());
            selectors.extend(shape.durations.keys());
            selectors.extend(shape.logs.keys());
            for timing in &shape.timing {
                match timing {
                    Timing::Overlap(s) | Timing::InTurn(s) | Timing::LongestSelfTime(s) => {
                        selectors.push(s)
                    }
                    Timing::Outlives { child, parent, .. } => {
                        selectors.extend([child, parent]);
                    }
                }
            }
        }
        if let Some(slowest) = &self.slowest {
            selectors.push(&slowest.longest_self_time);
        }
        if let Some(retries) = &self.retries {
            anyhow::ensure!(
                retries.call.kind == Kind::Client && retries.call.hop.is_some(),
                "signature: retries.call must be one hop's CLIENT span, not `{}`",
                retries.call
            );
            selectors.push(&retries.call);
        }
        for hop in selectors.iter().filter_map(|s| s.hop.as_deref()) {
            known(hop)?;
        }
        if let Some(hop) = &self.unsampled_kept_from {
            known(hop)?;
        }
        anyhow::ensure!(
            self.requests > 0 && self.concurrency > 0,
            "signature: requests and concurrency must be 1 or more"
        );
        if let Some(keeps) = &self.tail_sampling {
            let policies = tail.map(|t| t.policies.as_slice()).unwrap_or_default();
            for name in &keeps.kept_by {
                anyhow::ensure!(
                    policies.iter().any(|p| &p.name == name),
                    "signature: tailSampling names the policy `{name}`, which the collector does not have"
                );
            }
        }
        Ok(())
    }

    /// What of the signature the spans and log records received for
    /// `answers` do not show, a line each; empty when they show it all.
    pub fn check(
        &self,
        chain: &Topology,
        tail: Option<&TailSampling>,
        answers: &[Answered],
        spans: &[ReceivedSpan],
        logs: &[ReceivedLog],
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let mut by_trace: HashMap<String, Vec<&ReceivedSpan>> = HashMap::new();
        for span in spans {
            by_trace.entry(span.trace_id()).or_default().push(span);
        }
        let mut logs_by_trace: HashMap<String, Vec<&ReceivedLog>> = HashMap::new();
        for log in logs {
            logs_by_trace.entry(log.trace_id()).or_default().push(log);
        }
        if answers.len() != self.requests {
            failures.push(format!(
                "{} answers for {} requests",
                answers.len(),
                self.requests
            ));
        }
        self.check_answers(answers, &mut failures);
        self.check_sampling(chain, answers, &by_trace, &mut failures);

        let mut retried = 0;
        let mut traces = Vec::new();
        for answer in answers.iter().filter(|a| a.sampled) {
            let Some(shape) = self.answers.get(&answer.status) else {
                continue;
            };
            let spans = by_trace.get(&answer.trace_id).cloned().unwrap_or_default();
            let mut problems = Vec::new();
            let attempts = self.check_trace(chain, shape, &spans, &mut problems);
            let lines = logs_by_trace
                .get(&answer.trace_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            logs::check_lines(chain, &shape.logs, &spans, lines, &mut problems);
            retried += usize::from(attempts > 1);
            failures.extend(problems.into_iter().map(|p| {
                format!(
                    "the trace {} of a request answered {}: {p}",
                    answer.trace_id, answer.status
                )
            }));
            traces.push(Trace {
                id: answer.trace_id.clone(),
                spans: spans.into_iter().cloned().collect(),
                late: None,
            });
        }
        if let Some(retries) = self.retries.as_ref().filter(|_| retried == 0) {
            failures.push(format!(
                "no request retried {} among {}",
                retries.call,
                answers.len()
            ));
        }
        self.check_detached(chain, answers, &by_trace, &mut failures);
        let unsampled: HashSet<&str> = answers
            .iter()
            .filter(|a| !a.sampled)
            .map(|a| a.trace_id.as_str())
            .collect();
        logs::check_back_links(&by_trace, &unsampled, logs, &mut failures);
        if let Some(keeps) = &self.tail_sampling {
            check_tail_sampling(keeps, tail, &traces, &mut failures);
        }
        if let Some(slowest) = &self.slowest {
            check_slowest(chain, slowest, &traces, &mut failures);
        }
        failures
    }

    fn check_answers(&self, answers: &[Answered], failures: &mut Vec<String>) {
        let allowed: Vec<String> = self.answers.keys().map(u16::to_string).collect();
        for answer in answers {
            if !self.answers.contains_key(&answer.status) {
                failures.push(format!(
                    "a request answered {} (trace {}); the signature allows {}",
                    answer.status,
                    answer.trace_id,
                    allowed.join(", ")
                ));
            }
        }
        for (status, shape) in &self.answers {
            if !shape.optional && !answers.iter().any(|a| a.status == *status) {
                failures.push(format!(
                    "no request answered {status} among {}",
                    answers.len()
                ));
            }
        }
    }

    fn check_sampling(
        &self,
        chain: &Topology,
        answers: &[Answered],
        by_trace: &HashMap<String, Vec<&ReceivedSpan>>,
        failures: &mut Vec<String>,
    ) {
        let sampled = answers.iter().filter(|a| a.sampled).count();
        let share = sampled as f64 / answers.len().max(1) as f64;
        match &self.sampled {
            Some(expected) if (share - expected.share).abs() > expected.within => {
                failures.push(format!(
                    "{sampled} of {} requests sampled ({share:.2}), expected {} ± {}",
                    answers.len(),
                    expected.share,
                    expected.within
                ));
            }
            None if sampled < answers.len() => failures.push(format!(
                "only {sampled} of {} requests sampled; every hop keeps every trace",
                answers.len()
            )),
            _ => {}
        }
        let from_hop = self
            .unsampled_kept_from
            .as_ref()
            .and_then(|hop| hop_index(chain, hop));
        let from = from_hop.map(|index| chain.service_name(index));
        // What a hop that samples on its own keeps: itself and below.
        let below: HashSet<String> = from_hop
            .map(|index| descendants(chain, index))
            .unwrap_or_default();
        let mut holes = 0;
        for answer in answers.iter().filter(|a| !a.sampled) {
            let spans = by_trace.get(&answer.trace_id).cloned().unwrap_or_default();
            if spans.is_empty() {
                continue;
            }
            let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            match &from {
                Some(from)
                    if services.contains(from.as_str())
                        && services.iter().all(|s| s == from || below.contains(*s)) =>
                {
                    holes += 1
                }
                _ => failures.push(format!(
                    "the entry dropped trace {}, yet these services sent spans of it: {services:?}",
                    answer.trace_id
                )),
            }
        }
        if let Some(from) = from.as_ref().filter(|_| holes == 0) {
            failures.push(format!(
                "no trace the entry dropped was kept from {from} on, among {} requests",
                answers.len()
            ));
        }
    }

    /// Checks one request's trace; gives the attempts of the retried call.
    fn check_trace(
        &self,
        chain: &Topology,
        shape: &Shape,
        spans: &[&ReceivedSpan],
        problems: &mut Vec<String>,
    ) -> usize {
        let attempts = self
            .retries
            .as_ref()
            .map(|r| r.call.pick(chain, spans))
            .unwrap_or_default();
        check_span_counts(
            chain,
            self.retries.as_ref(),
            attempts.len(),
            spans,
            problems,
        );
        check_parents(chain, spans, problems);
        check_work(chain, spans, problems);

        // A failed attempt and what it called failed as the retries say.
        let failed: Vec<&ReceivedSpan> = attempts
            .len()
            .checked_sub(1)
            .map(|last| attempts[..last].to_vec())
            .unwrap_or_default();
        let exempt = with_descendants(&failed, spans);
        if let Some(retries) = &self.retries {
            check_attempts(retries, &attempts, problems);
        }
        let checked: Vec<&ReceivedSpan> = spans
            .iter()
            .copied()
            .filter(|s| !exempt.contains(&s.span_id()))
            .collect();
        check_errors(chain, &shape.errors, &checked, problems);

        for (selector, attributes) in &shape.attributes {
            for span in named(chain, selector, spans, problems) {
                for (key, value) in attributes {
                    let want = match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    let got = span.attr(key);
                    if got.as_deref() != Some(want.as_str()) {
                        problems.push(format!(
                            "{selector} ({}) has {key} = {got:?}, expected {want:?}",
                            span.service
                        ));
                    }
                }
            }
        }
        for (selector, bounds) in &shape.durations {
            for span in named(chain, selector, spans, problems) {
                let ms = millis(span.duration().as_nanos() as u64);
                if bounds.min.is_some_and(|min| ms < min) || bounds.max.is_some_and(|max| ms > max)
                {
                    problems.push(format!(
                        "{selector} lasted {ms:.0} ms, expected {}",
                        describe(bounds)
                    ));
                }
            }
        }
        for timing in &shape.timing {
            check_timing(chain, timing, spans, problems);
        }
        attempts.len()
    }

    /// Traces no request started: roots of the calls made without context.
    fn check_detached(
        &self,
        chain: &Topology,
        answers: &[Answered],
        by_trace: &HashMap<String, Vec<&ReceivedSpan>>,
        failures: &mut Vec<String>,
    ) {
        let expected = expected_spans(chain, Format::Html);
        let mut detached_roots: HashSet<String> = HashSet::new();
        let mut per_request = 0;
        for visit in &expected.hops {
            if chain.hops[visit.hop].propagation == Propagation::None {
                for callee in &chain.calls[visit.hop] {
                    detached_roots.insert(chain.service_name(*callee));
                    per_request += 1;
                }
            }
        }
        if let Some(stated) = self.traces_per_request.filter(|&s| s != 1 + per_request) {
            failures.push(format!(
                "the signature says {stated} traces per request; the chain makes {}",
                1 + per_request
            ));
        }
        let requested: HashSet<&str> = answers.iter().map(|a| a.trace_id.as_str()).collect();
        let mut detached = 0;
        for (id, spans) in by_trace {
            if requested.contains(id.as_str()) {
                continue;
            }
            let root = spans.iter().find(|s| s.parent_id().is_empty());
            match root {
                Some(root) if root.name() == SERVER && detached_roots.contains(&root.service) => {
                    detached += 1
                }
                _ => failures.push(format!(
                    "trace {id} belongs to no request and is not rooted at the SERVER span of \
                     a hop called without the trace context: {}",
                    outline(spans)
                )),
            }
        }
        let sampled = answers.iter().filter(|a| a.sampled).count();
        if self.sampled.is_none() && detached != sampled * per_request {
            failures.push(format!(
                "{detached} traces of their own from calls without the trace context, expected {}",
                sampled * per_request
            ));
        }
    }
}

fn millis(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn describe(bounds: &Bounds) -> String {
    match (bounds.min, bounds.max) {
        (Some(min), Some(max)) => format!("{min} to {max} ms"),
        (Some(min), None) => format!("at least {min} ms"),
        (None, Some(max)) => format!("at most {max} ms"),
        (None, None) => "any".to_string(),
    }
}

fn outline(spans: &[&ReceivedSpan]) -> String {
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{} {:?}", s.service, s.name()))
        .collect();
    names.join(", ")
}

/// The spans `selector` names; none is a problem.
fn named<'a>(
    chain: &Topology,
    selector: &Selector,
    spans: &[&'a ReceivedSpan],
    problems: &mut Vec<String>,
) -> Vec<&'a ReceivedSpan> {
    let found = selector.pick(chain, spans);
    if found.is_empty() {
        problems.push(format!("no span {selector}"));
    }
    found
}

/// The spans the chain implies, by (service, name); a retried call's
/// callees once more per extra attempt.
fn check_span_counts(
    chain: &Topology,
    retries: Option<&Retries>,
    attempts: usize,
    spans: &[&ReceivedSpan],
    problems: &mut Vec<String>,
) {
    let mut expected: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for (service, name) in expected_spans(chain, Format::Html).names() {
        *expected.entry((service.to_string(), name)).or_default() += 1;
    }
    let retried_hop = retries.and_then(|r| r.call.hop.as_deref().and_then(|h| hop_index(chain, h)));
    if let Some(hop) = retried_hop {
        let client = expected
            .get(&(chain.service_name(hop), CLIENT))
            .copied()
            .unwrap_or(0);
        let extra = attempts.saturating_sub(client);
        let below = descendants(chain, hop);
        for ((service, name), count) in expected.iter_mut() {
            if *service == chain.service_name(hop) && *name == CLIENT {
                *count += extra;
            } else if below.contains(service) {
                *count *= 1 + extra;
            }
        }
    }
    let mut got: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for span in spans {
        let name = expected
            .keys()
            .find(|(_, n)| *n == span.name())
            .map_or("(other)", |(_, n)| *n);
        *got.entry((span.service.clone(), name)).or_default() += 1;
    }
    let keys: HashSet<&(String, &str)> = expected.keys().chain(got.keys()).collect();
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort();
    for key in keys {
        let (want, have) = (
            expected.get(key).copied().unwrap_or(0),
            got.get(key).copied().unwrap_or(0),
        );
        if want != have {
            problems.push(format!(
                "{have} {:?} spans of {}, expected {want}",
                key.1, key.0
            ));
        }
    }
}

/// The services below hop `hop` in the chain.
fn descendants(chain: &Topology, hop: usize) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut stack = chain.calls[hop].clone();
    while let Some(index) = stack.pop() {
        if found.insert(chain.service_name(index)) {
            stack.extend(chain.calls[index].iter().copied());
        }
    }
    found
}

/// One root, the entry's SERVER span; every other span's parent in the
/// trace; a callee's SERVER span under a CLIENT span of a hop calling it.
fn check_parents(chain: &Topology, spans: &[&ReceivedSpan], problems: &mut Vec<String>) {
    let by_id: HashMap<String, &ReceivedSpan> = spans.iter().map(|s| (s.span_id(), *s)).collect();
    let roots: Vec<&&ReceivedSpan> = spans.iter().filter(|s| s.parent_id().is_empty()).collect();
    let entry = chain.service_name(0);
    if roots.len() != 1 || roots[0].service != entry || roots[0].name() != SERVER {
        let roots: Vec<&ReceivedSpan> = roots.into_iter().copied().collect();
        problems.push(format!(
            "the root should be {entry}'s {SERVER:?} alone, the roots are: {}",
            outline(&roots)
        ));
    }
    for span in spans.iter().filter(|s| !s.parent_id().is_empty()) {
        let Some(parent) = by_id.get(&span.parent_id()) else {
            problems.push(format!(
                "{}'s {:?} names a parent not in the trace",
                span.service,
                span.name()
            ));
            continue;
        };
        if span.name() != SERVER {
            continue;
        }
        let callers: Vec<String> = (0..chain.hops.len())
            .filter(|&caller| {
                chain.calls[caller]
                    .iter()
                    .any(|&callee| chain.service_name(callee) == span.service)
            })
            .map(|caller| chain.service_name(caller))
            .collect();
        if parent.name() != CLIENT || !callers.contains(&parent.service) {
            problems.push(format!(
                "{}'s {SERVER:?} is under {}'s {:?}, not under a {CLIENT:?} span of its callers {callers:?}",
                span.service,
                parent.service,
                parent.name()
            ));
        }
    }
}

/// `simulated work` lasts at least its hop's `responseTime - jitter`.
fn check_work(chain: &Topology, spans: &[&ReceivedSpan], problems: &mut Vec<String>) {
    for span in spans.iter().filter(|s| s.name() == WORK) {
        let Some(hop) = (0..chain.hops.len()).find(|&i| chain.service_name(i) == span.service)
        else {
            continue;
        };
        let spec = &chain.hops[hop];
        let least = spec.response_time.saturating_sub(spec.jitter) as f64;
        let ms = millis(span.duration().as_nanos() as u64);
        if ms < least {
            problems.push(format!(
                "{}'s {WORK:?} lasted {ms:.0} ms, less than {least} ms",
                span.service
            ));
        }
    }
}

/// The ERROR spans are those `errors` names, with their `error.type`.
fn check_errors(
    chain: &Topology,
    errors: &BTreeMap<Selector, Option<String>>,
    spans: &[&ReceivedSpan],
    problems: &mut Vec<String>,
) {
    let mut named_ids = HashSet::new();
    for (selector, error_type) in errors {
        for span in named(chain, selector, spans, problems) {
            named_ids.insert(span.span_id());
            if !span.is_error() {
                problems.push(format!(
                    "{selector} ({}) is OK, expected ERROR",
                    span.service
                ));
                continue;
            }
            let got = span.attr("error.type");
            if let Some(want) = error_type
                .as_ref()
                .filter(|w| got.as_deref() != Some(w.as_str()))
            {
                problems.push(format!(
                    "{selector} ({}) has error.type = {got:?}, expected {want:?}",
                    span.service
                ));
            }
        }
    }
    for span in spans
        .iter()
        .filter(|s| s.is_error() && !named_ids.contains(&s.span_id()))
    {
        problems.push(format!(
            "{}'s {:?} is ERROR ({:?}, error.type {:?}), which the signature does not expect",
            span.service,
            span.name(),
            span.status_message(),
            span.attr("error.type")
        ));
    }
}

/// Attempt `k` carries `resend_count = k`; all but the last failed.
fn check_attempts(retries: &Retries, attempts: &[&ReceivedSpan], problems: &mut Vec<String>) {
    for (number, attempt) in attempts.iter().enumerate() {
        let want = (number > 0).then(|| number.to_string());
        let got = attempt.attr("http.request.resend_count");
        if got != want {
            problems.push(format!(
                "attempt {number} of {} has http.request.resend_count = {got:?}, expected {want:?}",
                retries.call
            ));
        }
        if number + 1 < attempts.len() {
            let status = attempt.attr("http.response.status_code");
            if !attempt.is_error() || status != Some(retries.failed_status.to_string()) {
                problems.push(format!(
                    "attempt {number} of {} was retried, so it should be ERROR with status {}: \
                     it is {} with status {status:?}",
                    retries.call,
                    retries.failed_status,
                    if attempt.is_error() { "ERROR" } else { "OK" }
                ));
            }
        }
    }
}

/// The span ids of `roots` and of every span below them.
fn with_descendants(roots: &[&ReceivedSpan], spans: &[&ReceivedSpan]) -> HashSet<String> {
    let mut found: HashSet<String> = roots.iter().map(|s| s.span_id()).collect();
    loop {
        let before = found.len();
        for span in spans {
            if found.contains(&span.parent_id()) {
                found.insert(span.span_id());
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

fn check_timing(
    chain: &Topology,
    timing: &Timing,
    spans: &[&ReceivedSpan],
    problems: &mut Vec<String>,
) {
    match timing {
        Timing::Overlap(selector) => {
            let found = named(chain, selector, spans, problems);
            let last_start = found.iter().map(|s| s.start_ns()).max().unwrap_or(0);
            let first_end = found.iter().map(|s| s.end_ns()).min().unwrap_or(0);
            if found.len() < 2 || last_start >= first_end {
                problems.push(format!(
                    "the {} {selector} spans should run at the same time: the last starts \
                     {:.0} ms after the first ends",
                    found.len(),
                    millis(last_start.saturating_sub(first_end))
                ));
            }
        }
        Timing::InTurn(selector) => {
            let found = named(chain, selector, spans, problems);
            for pair in found.windows(2) {
                if pair[1].start_ns() < pair[0].end_ns() {
                    problems.push(format!(
                        "{selector}: one starts {:.0} ms before the previous one ends",
                        millis(pair[0].end_ns() - pair[1].start_ns())
                    ));
                }
            }
        }
        Timing::Outlives {
            child,
            parent,
            by_ms,
        } => {
            let parents = named(chain, parent, spans, problems);
            for span in named(chain, child, spans, problems) {
                let Some(caller) = parents.iter().find(|p| p.span_id() == span.parent_id()) else {
                    problems.push(format!("{child} is not under {parent}"));
                    continue;
                };
                let later = millis(span.end_ns().saturating_sub(caller.end_ns()));
                if later < *by_ms {
                    problems.push(format!(
                        "{child} ends {later:.0} ms after {parent}, expected at least {by_ms} ms"
                    ));
                }
            }
        }
        Timing::LongestSelfTime(selector) => {
            let longest = spans.iter().max_by_key(|s| self_time(s, spans));
            let wanted = named(chain, selector, spans, problems);
            if let Some(longest) =
                longest.filter(|l| !wanted.iter().any(|s| s.span_id() == l.span_id()))
            {
                problems.push(format!(
                    "{}'s {:?} has the longest self time ({:.0} ms), not {selector}",
                    longest.service,
                    longest.name(),
                    millis(self_time(longest, spans))
                ));
            }
        }
    }
}

/// ns of `span` not covered by any of its children.
fn self_time(span: &ReceivedSpan, spans: &[&ReceivedSpan]) -> u64 {
    let (start, end) = (span.start_ns(), span.end_ns());
    let mut children: Vec<(u64, u64)> = spans
        .iter()
        .filter(|s| s.parent_id() == span.span_id())
        .map(|s| (s.start_ns().clamp(start, end), s.end_ns().clamp(start, end)))
        .collect();
    children.sort();
    let mut covered = 0;
    let mut reach = start;
    for (from, to) in children {
        let from = from.max(reach);
        if to > from {
            covered += to - from;
            reach = to;
        }
    }
    (end - start).saturating_sub(covered)
}

/// The slowest trace is slower than the fastest by the spread, and spends
/// its longest self time where the signature says.
fn check_slowest(
    chain: &Topology,
    slowest: &Slowest,
    traces: &[Trace],
    failures: &mut Vec<String>,
) {
    let (Some(slow), Some(fast)) = (
        traces.iter().max_by_key(|t| t.duration()),
        traces.iter().min_by_key(|t| t.duration()),
    ) else {
        failures.push("slowest: no trace to compare".to_string());
        return;
    };
    let spread = (slow.duration().as_secs_f64() - fast.duration().as_secs_f64()) * 1000.0;
    if spread < slowest.spread_ms {
        failures.push(format!(
            "the slowest trace {} took {spread:.0} ms more than the fastest {}, expected at \
             least {} ms",
            slow.id, fast.id, slowest.spread_ms
        ));
    }
    let spans: Vec<&ReceivedSpan> = slow.spans.iter().collect();
    let mut problems = Vec::new();
    check_timing(
        chain,
        &Timing::LongestSelfTime(slowest.longest_self_time.clone()),
        &spans,
        &mut problems,
    );
    failures.extend(
        problems
            .into_iter()
            .map(|p| format!("the slowest trace {}: {p}", slow.id)),
    );
}

fn check_tail_sampling(
    keeps: &TailKeeps,
    tail: Option<&TailSampling>,
    traces: &[Trace],
    failures: &mut Vec<String>,
) {
    let Some(tail) = tail else {
        failures.push("tailSampling: the exercise's collector has no tail_sampling".to_string());
        return;
    };
    let (mut matched, mut dropped) = (0, 0);
    for trace in traces {
        let (keep, note) = tail.decide(trace);
        dropped += usize::from(!keep);
        let kept_by: Vec<&str> = note
            .strip_prefix("tail sampling: kept by ")
            .map(|names| names.split(", ").collect())
            .unwrap_or_default();
        for name in &keeps.kept_by {
            let Some(policy) = tail.policies.iter().find(|p| &p.name == name) else {
                continue;
            };
            let matches = match &policy.rule {
                Rule::StatusCode { status_code } => {
                    status_code.status_codes.iter().any(|c| c == "ERROR") && trace.has_error()
                }
                Rule::Latency { latency } => {
                    trace.duration().as_millis() >= u128::from(latency.threshold_ms)
                }
                _ => {
                    failures.push(format!(
                        "tailSampling: the policy `{name}` is neither status_code nor latency"
                    ));
                    return;
                }
            };
            matched += usize::from(matches);
            if matches && !kept_by.contains(&name.as_str()) {
                failures.push(format!(
                    "trace {} matches the policy `{name}`, yet: {note}",
                    trace.id
                ));
            }
        }
    }
    if matched == 0 {
        failures.push(format!(
            "no trace among {} matched {}",
            traces.len(),
            keeps.kept_by.join(", ")
        ));
    }
    if keeps.drops_some && dropped == 0 {
        failures.push(format!(
            "tail sampling kept all {} traces, expected some dropped",
            traces.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_file::ChainFile;
    use crate::trace::fixtures::{log, span};
    use opentelemetry_proto::tonic::trace::v1::Status;

    const MS: u64 = 1_000_000;

    /// microservice-a (50 ms of work) → microservice-b.
    fn chain() -> Topology {
        ChainFile::parse(r#"{"hops": [{"name": "a", "responseTime": 50}, {"name": "b"}]}"#)
            .and_then(ChainFile::check)
            .unwrap()
    }

    /// The page's trace through [`chain`], as the hops export it.
    fn trace() -> Vec<ReceivedSpan> {
        let (a, b) = ("microservice-a", "microservice-b");
        vec![
            span(a, SERVER, 1, None, 0, 100 * MS),
            span(a, WORK, 2, Some(1), 0, 60 * MS),
            span(a, CLIENT, 3, Some(1), 60 * MS, 90 * MS),
            span(a, "template load", 4, Some(1), 90 * MS, 91 * MS),
            span(a, "template render", 5, Some(1), 91 * MS, 92 * MS),
            span(b, SERVER, 6, Some(3), 61 * MS, 89 * MS),
            span(b, "template load", 7, Some(6), 61 * MS, 62 * MS),
            span(b, "template render", 8, Some(6), 62 * MS, 63 * MS),
        ]
    }

    fn signature(json: &str) -> Signature {
        serde_json::from_str(json).unwrap()
    }

    fn check(signature: &Signature, spans: &[ReceivedSpan]) -> Vec<String> {
        signature.validate(&chain(), None).unwrap();
        let answer = Answered {
            status: 200,
            trace_id: "07".repeat(16),
            sampled: true,
        };
        signature.check(&chain(), None, &[answer], spans, &[])
    }

    #[test]
    fn a_trace_as_the_chain_implies_passes() {
        let plain = signature(r#"{"answers": {"200": {}}}"#);
        assert_eq!(check(&plain, &trace()), Vec::<String>::new());
        let stated = signature(
            r#"{"answers": {"200": {"durations": {"a.server": {"min": 90, "max": 110}},
                "timing": [{"longestSelfTime": "a.work"}]}}}"#,
        );
        assert_eq!(check(&stated, &trace()), Vec::<String>::new());
    }

    #[test]
    fn what_the_chain_implies_is_checked_without_being_written() {
        let plain = signature(r#"{"answers": {"200": {}}}"#);
        let mut spans = trace();
        spans.remove(5); // microservice-b's SERVER span
        spans[1].span.end_time_unix_nano = 10 * MS; // work shorter than 50 ms
        spans[2].span.status = Some(Status {
            code: 2,
            message: "boom".into(),
        });
        let problems = check(&plain, &spans).join("\n");
        for expected in [
            r#"0 "GET /" spans of microservice-b, expected 1"#,
            "names a parent not in the trace",
            r#"microservice-a's "simulated work" lasted 10 ms, less than 50 ms"#,
            r#"microservice-a's "GET" is ERROR"#,
        ] {
            assert!(problems.contains(expected), "{expected}\nin:\n{problems}");
        }
    }

    #[test]
    fn what_the_file_states_is_checked() {
        let wrong = signature(
            r#"{"answers": {"200": {"errors": {"b.server": "injected_failure"},
                "attributes": {"*.server": {"lab.customer": "alice"}},
                "timing": [{"inTurn": "a.work"}, {"outlives":
                    {"child": "b.server", "parent": "a.client", "byMs": 5}}]}}}"#,
        );
        let problems = check(&wrong, &trace()).join("\n");
        for expected in [
            "b.server (microservice-b) is OK, expected ERROR",
            r#"*.server (microservice-a) has lab.customer = None, expected "alice""#,
            "b.server ends 0 ms after a.client, expected at least 5 ms",
        ] {
            assert!(problems.contains(expected), "{expected}\nin:\n{problems}");
        }
    }

    #[test]
    fn the_slowest_trace_is_the_outlier_the_signature_names() {
        // A second request, three times as slow everywhere.
        let mut slow = trace();
        for span in &mut slow {
            span.span.trace_id = vec![8; 16];
            span.span.start_time_unix_nano *= 3;
            span.span.end_time_unix_nano *= 3;
        }
        let answers = [("07", 200), ("08", 200)].map(|(id, status)| Answered {
            status,
            trace_id: id.repeat(16),
            sampled: true,
        });
        let spans: Vec<ReceivedSpan> = trace().into_iter().chain(slow).collect();
        let run = |json: &str| {
            let signature = signature(json);
            signature.validate(&chain(), None).unwrap();
            signature
                .check(&chain(), None, &answers, &spans, &[])
                .join("\n")
        };
        let base = r#""requests": 2, "answers": {"200": {}}"#;
        assert_eq!(
            run(&format!(
                r#"{{{base}, "slowest": {{"longestSelfTime": "a.work", "spreadMs": 150}}}}"#
            )),
            ""
        );
        let wrong = run(&format!(
            r#"{{{base}, "slowest": {{"longestSelfTime": "b.server", "spreadMs": 500}}}}"#
        ));
        let slow_id = "08".repeat(16);
        for expected in [
            format!("the slowest trace {slow_id} took 200 ms more than the fastest"),
            format!(
                "the slowest trace {slow_id}: microservice-a's \"simulated work\" has the \
                 longest self time (180 ms), not b.server"
            ),
        ] {
            assert!(wrong.contains(&expected), "{expected}\nin:\n{wrong}");
        }
    }

    #[test]
    fn log_lines_are_checked_under_their_span_and_back_to_it() {
        let stated = signature(
            r#"{"answers": {"200": {"logs": {"b.server": ["WARN request failed"],
                "a.server": ["INFO request handled"]}}}}"#,
        );
        let answer = Answered {
            status: 200,
            trace_id: "07".repeat(16),
            sampled: true,
        };
        let run = |logs: &[ReceivedLog]| {
            stated.validate(&chain(), None).unwrap();
            stated
                .check(
                    &chain(),
                    None,
                    std::slice::from_ref(&answer),
                    &trace(),
                    logs,
                )
                .join("\n")
        };
        let (a, b) = ("microservice-a", "microservice-b");
        let written = [
            log(a, 1, 5, "request handled status=200", "INFO"),
            log(b, 6, 3, "request failed", "WARN"),
        ];
        assert_eq!(run(&written), "");

        let wrong = [
            // In the right trace, but under a's CLIENT span, not its SERVER's.
            log(a, 3, 5, "request handled", "INFO"),
            // The right span, the wrong severity.
            log(b, 6, 3, "request failed", "ERROR"),
            // A span id no span of the trace has.
            log(b, 9, 4, "call failed", "WARN"),
        ];
        let problems = run(&wrong);
        for expected in [
            "a.server (microservice-a, span 0101010101010101) has no log line `INFO request handled`; its lines: []",
            "b.server (microservice-b, span 0606060606060606) has no log line `WARN request failed`; its lines: [\"ERROR request failed\"]",
            "the log line `WARN call failed` of microservice-b names trace 07070707070707070707070707070707 and span 0909090909090909, which no span received has",
        ] {
            assert!(problems.contains(expected), "{expected}\nin:\n{problems}");
        }
        let error = serde_json::from_str::<Signature>(
            r#"{"answers": {"200": {"logs": {"a.server": ["request failed"]}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`request failed` is no log line"), "{error}");
    }

    #[test]
    fn a_typo_is_an_error_that_names_it() {
        let error = serde_json::from_str::<Signature>(r#"{"answers": {"200": {"erors": {}}}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `erors`"), "{error}");
        let error = serde_json::from_str::<Signature>(
            r#"{"answers": {"200": {"errors": {"a.srever": null}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`a.srever` names no span"), "{error}");
        let unknown = signature(r#"{"answers": {"200": {"durations": {"c.work": {}}}}}"#);
        let error = unknown.validate(&chain(), None).unwrap_err().to_string();
        assert_eq!(error, "signature: no hop `c` in the chain");
    }
}
