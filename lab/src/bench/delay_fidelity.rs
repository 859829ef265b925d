//! Mode 4: how closely a hop keeps its configured delay.

use std::time::Duration;

use super::config::BenchConfig;
use super::report::DelayFidelity;
use super::setup::{common, hops, round, stop};
use crate::chain::Chain;
use crate::load::{self, Load, Sample, Summary};
use crate::receiver::OtlpReceiver;

/// Mode 4: end-to-end latency minus the configured delays, at a low rate.
pub(super) async fn run(config: &BenchConfig) -> anyhow::Result<DelayFidelity> {
    let receiver = OtlpReceiver::start_counting(config.protocol)?;
    let delays: Vec<u64> = (0..config.hops).map(|i| 100 * (i as u64 + 1)).collect();
    let configured: u64 = delays.iter().sum();
    let mut chain = Chain::start(
        &config.binary,
        &common(config, &receiver),
        &hops(config, |i| delays[i]),
    )
    .await?;
    // Enough connections that pacing, not the chain's latency, sets the rate.
    let connections = ((config.delay_rate * configured as f64 / 1000.0).ceil() as usize + 1).max(2);
    let spec = Load {
        url: chain.entry().url().to_string(),
        connections,
        duration: Duration::from_secs_f64(config.delay_requests as f64 / config.delay_rate),
        rate: Some(config.delay_rate),
        timeout: Duration::from_secs(30),
        json: false,
    };
    // One request per connection first, so that no measured request pays for
    // a new connection.
    load::run(&Load {
        duration: Duration::from_millis(1),
        rate: None,
        ..spec.clone()
    })
    .await;
    let samples = load::run(&spec).await;
    stop(&mut chain).await;

    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
    let latency = Summary::of(ok.iter().copied(), spec.duration);
    // No answer at all must not read as a delay kept perfectly.
    let overshoot = |ms: f64| {
        if ok.is_empty() {
            f64::NAN
        } else {
            round(ms - configured as f64)
        }
    };
    Ok(DelayFidelity {
        configured_ms: delays,
        requests: samples.len(),
        p50_overshoot_ms: overshoot(latency.p50_ms),
        p95_overshoot_ms: overshoot(latency.p95_ms),
        p99_overshoot_ms: overshoot(latency.p99_ms),
        max_overshoot_ms: overshoot(latency.max_ms),
        non_2xx: samples.iter().filter(|s| !s.ok()).count(),
    })
}
