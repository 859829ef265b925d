//! The spans a receiver got, by trace, service and name.

use std::time::Duration;

use crate::receiver::{OtlpReceiver, ReceivedSpan};

/// How long a test waits for spans to arrive.
pub const SPAN_WAIT: Duration = Duration::from_secs(20);

/// Waits until at least `count` spans of `trace_id` arrived; gives them.
pub async fn trace_spans(
    receiver: &OtlpReceiver,
    trace_id: &str,
    count: usize,
) -> Vec<ReceivedSpan> {
    let of_trace = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect::<Vec<_>>()
    };
    match receiver
        .wait_until(SPAN_WAIT, |spans| of_trace(spans).len() >= count)
        .await
    {
        Ok(spans) => of_trace(&spans),
        Err(spans) => panic!(
            "expected {count} spans of trace {trace_id}, got {}: {:#?}",
            of_trace(&spans).len(),
            summary(&of_trace(&spans))
        ),
    }
}

/// A line per span: service, kind, name, ids.
pub fn summary(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {:?} span={} parent={}",
                s.service,
                s.kind(),
                s.name(),
                s.span_id(),
                s.parent_id()
            )
        })
        .collect()
}

/// The spans of `service` called `name`, earliest first.
pub fn all<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.name() == name)
        .collect();
    found.sort_by_key(|s| s.start_ns());
    found
}

/// The one span of `service` called `name`.
pub fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found = all(spans, service, name);
    assert_eq!(
        found.len(),
        1,
        "{service} should have exactly one {name:?} span: {:#?}",
        summary(spans)
    );
    found[0]
}

/// Spans of one trace, looked up by service and name.
pub struct Tree {
    pub spans: Vec<ReceivedSpan>,
}

impl Tree {
    pub fn new(spans: Vec<ReceivedSpan>) -> Self {
        Self { spans }
    }

    pub fn all(&self, service: &str, name: &str) -> Vec<&ReceivedSpan> {
        all(&self.spans, service, name)
    }

    /// The one span of `service` called `name`.
    pub fn one(&self, service: &str, name: &str) -> &ReceivedSpan {
        one(&self.spans, service, name)
    }
}
