//! The runner's tail-sampling decisions on recorded traffic: export requests
//! (OTLP protobuf, as the hops sent them) grouped into traces by trace id,
//! each decided by [`TailSampling`] as `cargo run` would once the trace is
//! complete. The runtime test compares these with the real collector's
//! decisions on the same traffic (`lab-tail-sampling`).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde::Serialize;

use super::assembly::Trace;
use super::tail_sampling::TailSampling;
use crate::receiver::{ReceivedSpan, received_spans};

/// What the runner makes of one recorded trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub trace_id: String,
    pub spans: usize,
    pub error: bool,
    /// From the first span's start to the last one's end.
    pub duration_ms: f64,
    pub kept: bool,
    pub kept_by: Vec<String>,
}

/// Decodes recorded export requests; the error names the one that is not
/// an `ExportTraceServiceRequest`.
pub fn decode(requests: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<ReceivedSpan>> {
    let mut spans = Vec::new();
    for (name, body) in requests {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).map_err(|error| {
            anyhow::anyhow!("{name} is not an OTLP export request (protobuf): {error}")
        })?;
        spans.extend(received_spans(request));
    }
    Ok(spans)
}

/// Every trace of `spans`, ordered by trace id, with the runner's decision.
pub fn decide_all(sampling: &TailSampling, spans: Vec<ReceivedSpan>) -> Vec<Decision> {
    let mut traces: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        traces.entry(span.trace_id()).or_default().push(span);
    }
    traces
        .into_iter()
        .map(|(id, spans)| {
            let trace = Trace {
                id,
                spans,
                late: None,
            };
            let kept_by: Vec<String> = sampling
                .keeping(&trace)
                .into_iter()
                .map(str::to_string)
                .collect();
            Decision {
                spans: trace.spans.len(),
                error: trace.has_error(),
                duration_ms: trace.duration().as_nanos() as f64 / 1e6,
                kept: !kept_by.is_empty(),
                kept_by,
                trace_id: trace.id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn span(trace: u8, start_ms: u64, end_ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![start_ms as u8 + 1; 8],
            start_time_unix_nano: start_ms * 1_000_000,
            end_time_unix_nano: end_ms * 1_000_000,
            status: error.then(|| Status {
                code: 2,
                message: String::new(),
            }),
            ..Span::default()
        }
    }

    fn request(service: &str, spans: Vec<Span>) -> Vec<u8> {
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }

    fn sampling() -> TailSampling {
        TailSampling::from_settings(&serde_json::json!({
            "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "slow", "type": "latency", "latency": {"threshold_ms": 400}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn spans_of_several_requests_make_one_trace_each() {
        // Trace 1 is spread over two requests (two services) and slow as a
        // whole only; trace 2 fails in its second service's span.
        let recorded = vec![
            (
                "a".to_string(),
                request("one", vec![span(1, 0, 450, false), span(2, 0, 100, false)]),
            ),
            (
                "b".to_string(),
                request("two", vec![span(1, 10, 300, false), span(2, 5, 50, true)]),
            ),
        ];
        let decisions = decide_all(&sampling(), decode(&recorded).unwrap());
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        let (slow, failed) = (&decisions[0], &decisions[1]);
        assert_eq!(slow.trace_id, "01".repeat(16));
        assert_eq!((slow.spans, slow.error, slow.kept), (2, false, true));
        assert_eq!(slow.kept_by, ["slow"]);
        assert!((slow.duration_ms - 450.0).abs() < 1e-9, "{slow:?}");
        assert_eq!(
            (failed.error, failed.kept_by.clone()),
            (true, vec!["errors".to_string()])
        );
    }

    #[test]
    fn a_fast_healthy_trace_is_dropped() {
        let recorded = vec![(
            "a".to_string(),
            request("one", vec![span(3, 0, 100, false)]),
        )];
        let decisions = decide_all(&sampling(), decode(&recorded).unwrap());
        assert_eq!((decisions[0].kept, decisions[0].kept_by.len()), (false, 0));
    }

    #[test]
    fn a_body_that_is_not_an_export_request_is_named() {
        let error = decode(&[("exports/7.pb".to_string(), vec![0xff, 0xff, 0xff])]).unwrap_err();
        assert!(error.to_string().contains("exports/7.pb"), "{error}");
    }
}
