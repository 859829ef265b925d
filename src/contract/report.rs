//! The hop report: what a hop answers in JSON about itself and its calls.
//! The hop that called it reads it back and nests it in its own.

use serde::{Deserialize, Serialize};

/// One hop of the chain and, nested, everything it called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopReport {
    pub service: String,
    pub title: String,
    /// DESCRIPTION, when the hop has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Configured RESPONSE_TIME.
    pub response_time_ms: u64,
    pub response_time_jitter_ms: u64,
    /// The delay this request actually got (RESPONSE_TIME ± jitter).
    pub delay_ms: u64,
    /// Measured time of this hop up to rendering, its calls included.
    pub duration_ms: f64,
    pub status: u16,
    pub error: Option<String>,
    pub trace_id: String,
    pub span_id: String,
    pub downstream: Vec<CallReport>,
}

/// One call to a next hop, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    pub url: String,
    /// HTTP status of the answer; absent when there was none.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: f64,
    /// The next hop's own report, when it answered with one.
    pub hop: Option<Box<HopReport>>,
}

/// Milliseconds with a tenth, for people and for the JSON answer.
pub fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}
