//! Mode 5: the collector goes down, comes back, hangs and comes back again
//! under a paced load; requests must not fail, and spans are counted.

use std::time::{Duration, Instant};

use super::config::BenchConfig;
use super::report::{CollectorFaults, FaultPhase, SpanCount};
use super::setup::{
    common, hops, load as load_spec, ok_traces, received, round, spans_per_request, stop,
};
use crate::chain::Chain;
use crate::load::{self, Sample, Summary};
use crate::receiver::OtlpReceiver;
use crate::trace::Format;

/// Mode 5: the receiver goes down, comes back, hangs, comes back, while a
/// paced load runs through the chain.
pub(super) async fn run(config: &BenchConfig, rate: f64) -> anyhow::Result<CollectorFaults> {
    const PHASES: [&str; 5] = [
        "baseline",
        "collector down",
        "collector back",
        "collector hangs",
        "collector back again",
    ];
    let receiver = OtlpReceiver::start_counting(config.protocol)?;
    let mut chain = Chain::start(
        &config.binary,
        &common(config, &receiver),
        &hops(config, |_| 0),
    )
    .await?;
    load::run(&load_spec(config, &chain, config.warmup, Some(rate))).await;

    let phase = config.phase;
    let spec = load_spec(config, &chain, phase * PHASES.len() as u32, Some(rate));
    let pids: Vec<u32> = chain.hops.iter().map(|i| i.pid()).collect();
    let faults = async {
        let started = Instant::now();
        let mut max_rss = [0u64; PHASES.len()];
        for (index, max) in max_rss.iter_mut().enumerate() {
            match index {
                1 => receiver.stop(),
                2 => receiver.restart().await?,
                3 => receiver.set_hang(true),
                4 => {
                    receiver.set_hang(false);
                    receiver.restart().await?;
                }
                _ => {}
            }
            let end = started + phase * (index as u32 + 1);
            while Instant::now() < end {
                for pid in &pids {
                    *max = (*max).max(crate::instance::rss_kib(*pid).unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(100).min(phase / 4)).await;
            }
        }
        anyhow::Ok(max_rss)
    };
    let (samples, max_rss) = tokio::join!(load::run(&spec), faults);
    let max_rss = max_rss?;
    stop(&mut chain).await;

    let spans = receiver.stubs();
    let per_request = spans_per_request(config, |_| 0, Format::Html)?;
    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let in_phase: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.sent >= phase * index as u32 && s.sent < phase * (index as u32 + 1))
                .collect();
            let traces = ok_traces(in_phase.iter().copied());
            FaultPhase {
                phase: name,
                summary: Summary::of(in_phase.iter().copied(), phase),
                max_rss_kib: max_rss[index],
                spans: SpanCount::of(traces.len() * per_request, received(&spans, &traces)),
            }
        })
        .collect();
    Ok(CollectorFaults {
        rate: round(rate),
        phases,
        failed_requests: samples.iter().filter(|s| !s.ok()).count(),
    })
}
