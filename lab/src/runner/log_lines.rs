//! `--logs`: the log records a hop wrote inside a span, printed under that
//! span's line in the waterfall, and the book that holds them by trace
//! until the trace is drawn.
//!
//! ```text
//!   11.9 ms  ████████████████████████████████████████  ms-1 GET /  ERROR …
//!                                                       │  · WARN request failed status=502 reason=…
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::receiver::{ReceivedLog, ReceivedSpan};

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";

/// Log records of traces not drawn (the runner's own load) are let go
/// after this long.
const KEEP: Duration = Duration::from_secs(30);

/// Log records waiting for their trace to be drawn, by trace id.
#[derive(Default)]
pub struct LogBook {
    traces: HashMap<String, (Instant, Vec<ReceivedLog>)>,
}

impl LogBook {
    /// Keeps the records written inside a span; the others (start-up,
    /// shutdown) belong to no waterfall.
    pub fn add(&mut self, batch: Vec<ReceivedLog>, now: Instant) {
        for log in batch {
            let trace_id = log.trace_id();
            if trace_id.is_empty() {
                continue;
            }
            self.traces
                .entry(trace_id)
                .or_insert_with(|| (now, Vec::new()))
                .1
                .push(log);
        }
        self.traces
            .retain(|_, (since, _)| now.duration_since(*since) < KEEP);
    }

    /// The records of `trace_id`, earliest first, no longer kept.
    pub fn take(&mut self, trace_id: &str) -> Vec<ReceivedLog> {
        let mut logs = self
            .traces
            .remove(trace_id)
            .map(|(_, logs)| logs)
            .unwrap_or_default();
        logs.sort_by_key(ReceivedLog::time_ns);
        logs
    }
}

/// The lines under `span`'s line: one per record written in it. `indent`
/// is what its children's lines have in front of their branch (the blank
/// duration and bar columns, then the tree), and the tree's line goes on
/// when it has children. `colour`: ANSI colours for a terminal.
pub fn lines_under(
    span: &ReceivedSpan,
    logs: &[ReceivedLog],
    indent: &str,
    has_children: bool,
    colour: bool,
) -> Vec<String> {
    let span_id = span.span_id();
    let tree = format!("{indent}{}", if has_children { "│  " } else { "   " });
    logs.iter()
        .filter(|log| log.span_id() == span_id)
        .map(|log| {
            let mut text = format!("· {} {}", log.severity(), log.body());
            for attribute in log.attributes() {
                let value = attribute
                    .value
                    .as_ref()
                    .map(crate::receiver::value_text)
                    .unwrap_or_default();
                let _ = write!(text, " {}={value}", attribute.key);
            }
            let paint = if matches!(log.severity(), "WARN" | "ERROR") {
                RED
            } else {
                DIM
            };
            if colour {
                format!("{DIM}{tree}{RESET}{paint}{text}{RESET}")
            } else {
                format!("{tree}{text}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::{self, span};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

    /// A record of service `a` with a `status` field.
    fn log(span_id: u8, time: u64, body: &str, severity: &str) -> ReceivedLog {
        let mut log = fixtures::log("a", span_id, time, body, severity);
        log.record.attributes.push(KeyValue {
            key: "status".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(502)),
            }),
            ..KeyValue::default()
        });
        log
    }

    #[test]
    fn a_spans_records_go_under_it_and_no_other() {
        let server = span("a", "GET /", 1, None, 0, 100);
        let logs = [
            log(2, 5, "elsewhere", "INFO"),
            log(1, 9, "request failed", "WARN"),
        ];
        let lines = lines_under(&server, &logs, "    ", true, false);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0], "    │  · WARN request failed status=502");
        let leaf = lines_under(&server, &logs, "│  ", false, false);
        assert!(
            leaf[0].ends_with("│     · WARN request failed status=502"),
            "{leaf:#?}"
        );
    }

    #[test]
    fn the_book_gives_a_traces_records_in_time_order_once() {
        let mut book = LogBook::default();
        let now = Instant::now();
        book.add(
            vec![log(1, 9, "second", "INFO"), log(1, 3, "first", "INFO")],
            now,
        );
        let trace_id = "07".repeat(16);
        let bodies: Vec<String> = book.take(&trace_id).iter().map(ReceivedLog::body).collect();
        assert_eq!(bodies, ["first", "second"]);
        assert!(book.take(&trace_id).is_empty());
        book.add(vec![log(1, 1, "old", "INFO")], now);
        book.add(Vec::new(), now + KEEP);
        assert!(book.take(&trace_id).is_empty(), "let go after {KEEP:?}");
    }
}
