//! The targets the lab is judged by, and how a report's figures meet them.

use super::report::{
    CollectorFaults, DelayFidelity, Memory, Overhead, Setting, ShutdownRun, SignalCost, Target,
};

pub const MIN_TRACING_SHARE: f64 = 0.90;
/// Traces, logs and metrics together (issue 18).
pub const MIN_ALL_SIGNALS_SHARE: f64 = 0.70;
pub const MIN_HTML_SHARE_OF_JSON: f64 = 0.90;
pub const MAX_RSS_KIB: u64 = 12 * 1024;
pub const MAX_DELAY_OVERSHOOT_MS: f64 = 3.0;

pub(super) fn of(
    overhead: &Overhead,
    signal_cost: &SignalCost,
    half_capacity: &Setting,
    memory: &Memory,
    delay: &DelayFidelity,
    faults: &CollectorFaults,
    shutdown: &[ShutdownRun],
) -> Vec<Target> {
    let lost_at_half = half_capacity.spans.map_or(0, |s| s.lost);
    let max_rss = memory.after_load_kib.iter().copied().max().unwrap_or(0);
    let shutdown_failed: usize = shutdown.iter().map(|r| r.accepted_but_failed).sum();
    let shutdown_lost: usize = shutdown.iter().map(|r| r.spans.lost).sum();
    vec![
        Target {
            name: "tracing overhead: sampled / disabled throughput",
            value: overhead.sampled_share_of_disabled,
            limit: format!(">= {MIN_TRACING_SHARE}"),
            met: overhead.sampled_share_of_disabled >= MIN_TRACING_SHARE,
        },
        Target {
            name: "all signals: sampled / disabled throughput",
            value: signal_cost.all_share_of_disabled,
            limit: format!(">= {MIN_ALL_SIGNALS_SHARE}"),
            met: signal_cost.all_share_of_disabled >= MIN_ALL_SIGNALS_SHARE,
        },
        Target {
            name: "HTML / JSON throughput, both sampled",
            value: overhead.html_share_of_json,
            limit: format!(">= {MIN_HTML_SHARE_OF_JSON}"),
            met: overhead.html_share_of_json >= MIN_HTML_SHARE_OF_JSON,
        },
        Target {
            name: "spans lost at half capacity",
            value: lost_at_half as f64,
            limit: "0".into(),
            met: lost_at_half == 0,
        },
        Target {
            name: "resident size after load, KiB (largest instance)",
            value: max_rss as f64,
            limit: format!("<= {MAX_RSS_KIB}"),
            met: max_rss > 0 && max_rss <= MAX_RSS_KIB,
        },
        Target {
            name: "delay fidelity: p99 overshoot, ms",
            value: delay.p99_overshoot_ms,
            limit: format!("<= {MAX_DELAY_OVERSHOOT_MS}"),
            met: delay.p99_overshoot_ms <= MAX_DELAY_OVERSHOOT_MS && delay.non_2xx == 0,
        },
        Target {
            name: "failed requests during collector faults",
            value: faults.failed_requests as f64,
            limit: "0".into(),
            met: faults.failed_requests == 0,
        },
        Target {
            name: "accepted requests failed by a shutdown",
            value: shutdown_failed as f64,
            limit: "0".into(),
            met: shutdown_failed == 0 && shutdown.iter().all(|r| r.exit_ok),
        },
        Target {
            name: "spans lost of requests completed around a shutdown",
            value: shutdown_lost as f64,
            limit: "0".into(),
            met: shutdown_lost == 0,
        },
    ]
}
