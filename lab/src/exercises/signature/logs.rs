//! The log half of a signature: which lines a span's hop wrote inside it
//! (`answers."<status>".logs`), and that every line names a span of its
//! trace, so a learner can go from the trace to its lines and back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use super::Selector;
use crate::chain_file::Topology;
use crate::receiver::{ReceivedLog, ReceivedSpan};

/// `"WARN request failed"`: a record of that severity whose message begins
/// with the rest, as the runner prints it under its span.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LogLine {
    severity: String,
    begins: String,
}

const SEVERITIES: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

impl TryFrom<String> for LogLine {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(' ') {
            Some((severity, begins)) if SEVERITIES.contains(&severity) && !begins.is_empty() => {
                Ok(Self {
                    severity: severity.to_string(),
                    begins: begins.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}` is no log line: write a severity ({}) and the start of the message, \
                 e.g. `WARN request failed`",
                SEVERITIES.join(", ")
            )),
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.severity, self.begins)
    }
}

impl LogLine {
    fn matches(&self, log: &ReceivedLog) -> bool {
        log.severity() == self.severity && log.body().starts_with(&self.begins)
    }
}

/// Every span `lines` names wrote each of its lines inside itself: a record
/// with the span's trace and span id, from the span's service.
pub(super) fn check_lines(
    chain: &Topology,
    lines: &BTreeMap<Selector, Vec<LogLine>>,
    spans: &[&ReceivedSpan],
    logs: &[&ReceivedLog],
    problems: &mut Vec<String>,
) {
    for (selector, wanted) in lines {
        let picked = selector.pick(chain, spans);
        if picked.is_empty() {
            problems.push(format!("no span {selector}, whose log lines are stated"));
        }
        for span in picked {
            let written: Vec<&ReceivedLog> = logs
                .iter()
                .copied()
                .filter(|l| l.span_id() == span.span_id() && l.service == span.service)
                .collect();
            for line in wanted
                .iter()
                .filter(|w| !written.iter().any(|l| w.matches(l)))
            {
                let seen: Vec<String> = written
                    .iter()
                    .map(|l| format!("{} {}", l.severity(), l.body()))
                    .collect();
                problems.push(format!(
                    "{selector} ({}, span {}) has no log line `{line}`; its lines: {seen:?}",
                    span.service,
                    span.span_id()
                ));
            }
        }
    }
}

/// The way back: every record that carries the id of a trace the hops
/// sent names a span of that trace, of its own service. Traces the entry
/// dropped (`unsampled`) have ids but no spans, and are left out.
pub(super) fn check_back_links(
    by_trace: &HashMap<String, Vec<&ReceivedSpan>>,
    unsampled: &HashSet<&str>,
    logs: &[ReceivedLog],
    failures: &mut Vec<String>,
) {
    for log in logs {
        let trace_id = log.trace_id();
        if trace_id.is_empty() || unsampled.contains(trace_id.as_str()) {
            continue;
        }
        let named = by_trace.get(&trace_id).is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s.span_id() == log.span_id() && s.service == log.service)
        });
        if !named {
            failures.push(format!(
                "the log line `{} {}` of {} names trace {trace_id} and span {}, which no \
                 span received has",
                log.severity(),
                log.body(),
                log.service,
                log.span_id()
            ));
        }
    }
}
