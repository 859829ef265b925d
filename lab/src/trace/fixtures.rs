//! Spans for the unit tests of the trace model and of its drawing.

use crate::receiver::{ReceivedLog, ReceivedSpan};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

/// A span of trace `07…07`: ids are one byte repeated.
pub fn span(
    service: &str,
    name: &str,
    id: u8,
    parent: Option<u8>,
    start: u64,
    end: u64,
) -> ReceivedSpan {
    ReceivedSpan {
        service: service.into(),
        resource: Vec::new(),
        scope: None,
        span: Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Span::default()
        },
    }
}

/// A log record of `service`, written at `time` in span `span_id` of
/// trace `07…07`.
pub fn log(service: &str, span_id: u8, time: u64, body: &str, severity: &str) -> ReceivedLog {
    ReceivedLog {
        service: service.into(),
        resource: Vec::new(),
        scope: None,
        record: LogRecord {
            observed_time_unix_nano: time,
            severity_text: severity.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.into())),
            }),
            trace_id: vec![7; 16],
            span_id: vec![span_id; 8],
            ..LogRecord::default()
        },
    }
}

/// a: GET / (1) → simulated work (2), GET (3) → b: GET / (4), failed.
pub fn spans() -> Vec<ReceivedSpan> {
    let mut failed = span("b", "GET /", 4, Some(3), 60, 90);
    failed.span.status = Some(Status {
        code: 2,
        message: "injected failure".into(),
    });
    vec![
        failed,
        span("a", "GET /", 1, None, 0, 100),
        span("a", "simulated work", 2, Some(1), 0, 50),
        span("a", "GET", 3, Some(1), 50, 95),
    ]
}
