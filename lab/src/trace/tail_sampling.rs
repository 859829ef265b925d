//! Tail sampling as the lab plays it: the policies of the collector's
//! `tail_sampling` processor (opentelemetry-collector-contrib) that the lab's
//! exercises use, applied to each finished trace. A trace is kept when any
//! policy keeps it; only kept traces go on to `--otlp-endpoint`, and every
//! waterfall says what was decided and why.

use serde::Deserialize;

use super::assembly::Trace;

/// The processor's settings, as an exercise gives them to the collector.
#[derive(Debug, Clone, Deserialize)]
pub struct TailSampling {
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(flatten)]
    pub rule: Rule,
}

/// The policy types the runner knows; the collector knows more.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rule {
    StatusCode { status_code: StatusCodes },
    Latency { latency: Latency },
    Probabilistic { probabilistic: Probabilistic },
    AlwaysSample,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusCodes {
    pub status_codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    pub threshold_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Probabilistic {
    pub sampling_percentage: f64,
}

impl TailSampling {
    /// Reads the processor's settings; a policy type the runner does not
    /// play is an error that names it.
    pub fn from_settings(settings: &serde_json::Value) -> anyhow::Result<Self> {
        serde_json::from_value(settings.clone()).map_err(|error| {
            anyhow::anyhow!("tail_sampling: {error} (the runner plays status_code, latency, probabilistic and always_sample)")
        })
    }

    /// The names of the policies that keep `trace` (none: it is dropped).
    pub fn keeping(&self, trace: &Trace) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|policy| policy.rule.keeps(trace))
            .map(|policy| policy.name.as_str())
            .collect()
    }

    /// Whether `trace` is kept, and the words for its waterfall.
    pub fn decide(&self, trace: &Trace) -> (bool, String) {
        let keeping = self.keeping(trace);
        if keeping.is_empty() {
            (
                false,
                "tail sampling: dropped (no policy keeps it)".to_string(),
            )
        } else {
            (
                true,
                format!("tail sampling: kept by {}", keeping.join(", ")),
            )
        }
    }
}

impl Rule {
    fn keeps(&self, trace: &Trace) -> bool {
        match self {
            Rule::StatusCode { status_code } => {
                let error = trace.has_error();
                status_code
                    .status_codes
                    .iter()
                    .any(|code| match code.as_str() {
                        "ERROR" => error,
                        "OK" | "UNSET" => !error,
                        _ => false,
                    })
            }
            Rule::Latency { latency } => {
                trace.duration().as_millis() >= u128::from(latency.threshold_ms)
            }
            Rule::Probabilistic { probabilistic } => {
                // The same trace id always gets the same answer.
                let low: u64 =
                    u64::from_str_radix(&trace.id[trace.id.len().saturating_sub(16)..], 16)
                        .unwrap_or(0);
                (low % 10_000) as f64 / 100.0 < probabilistic.sampling_percentage
            }
            Rule::AlwaysSample => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::ReceivedSpan;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    fn trace(id: &str, millis: u64, error: bool) -> Trace {
        Trace {
            id: id.to_string(),
            spans: vec![ReceivedSpan {
                service: "a".into(),
                resource: Vec::new(),
                scope: None,
                span: Span {
                    start_time_unix_nano: 0,
                    end_time_unix_nano: millis * 1_000_000,
                    status: error.then(|| Status {
                        code: 2,
                        message: String::new(),
                    }),
                    ..Span::default()
                },
            }],
            late: None,
        }
    }

    fn sampling() -> TailSampling {
        TailSampling::from_settings(&serde_json::json!({
            "decision_wait": "2s",
            "policies": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "slow", "type": "latency", "latency": {"threshold_ms": 400}},
                {"name": "a-tenth", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn errors_and_slow_traces_are_kept_and_a_share_of_the_rest() {
        let sampling = sampling();
        assert!(sampling.decide(&trace(&"1".repeat(32), 10, true)).0);
        let (kept, note) = sampling.decide(&trace(&"1".repeat(32), 500, false));
        assert!(kept && note.contains("slow"), "{note}");
        let kept = (0..1000u64)
            .filter(|i| {
                sampling
                    .decide(&trace(&format!("{:032x}", i * 7919), 10, false))
                    .0
            })
            .count();
        assert!(
            (60..=140).contains(&kept),
            "{kept} of 1000 healthy traces kept"
        );
    }

    #[test]
    fn a_policy_the_runner_cannot_play_is_named() {
        let error = TailSampling::from_settings(&serde_json::json!({
            "policies": [{"name": "x", "type": "string_attribute", "string_attribute": {}}]
        }))
        .unwrap_err();
        assert!(error.to_string().contains("string_attribute"), "{error}");
    }
}
