//! What every mode does alike: start a line of hops, load it, read its
//! processes' CPU and memory, stop it, and count the spans that came back.

use std::collections::HashSet;
use std::time::Duration;

use super::config::BenchConfig;
use crate::chain::Chain;
use crate::chain_file::{ChainFile, Topology};
use crate::instance::InstanceConfig;
use crate::load::{Load, Sample};
use crate::receiver::{OtlpReceiver, SpanStub};
use crate::trace::{Format, expected_spans};

pub(super) fn common(config: &BenchConfig, receiver: &OtlpReceiver) -> InstanceConfig {
    let mut common = InstanceConfig::new()
        .envs(receiver.env())
        // The SDK's default batching, as a user of the lab has it.
        .env("OTEL_BSP_SCHEDULE_DELAY", "5000");
    if let Some(dir) = &config.templates_dir {
        common = common.env("TEMPLATES_DIR", dir.display().to_string());
    }
    common.envs(config.hop_env.iter().cloned())
}

/// The chain a mode starts: `config.hops` hops in a row, hop `i` waiting
/// `delay_ms(i)`; named as the lab names them (`microservice-1`, …).
pub(super) fn line(
    config: &BenchConfig,
    delay_ms: impl Fn(usize) -> u64,
) -> anyhow::Result<Topology> {
    let hops: Vec<serde_json::Value> = (0..config.hops)
        .map(|i| serde_json::json!({"name": (i + 1).to_string(), "responseTime": delay_ms(i)}))
        .collect();
    let file: ChainFile = serde_json::from_value(serde_json::json!({ "hops": hops }))?;
    file.check()
}

/// Each hop's own settings for [`Chain::start`], which links them.
pub(super) fn hops(config: &BenchConfig, delay_ms: impl Fn(usize) -> u64) -> Vec<InstanceConfig> {
    (0..config.hops)
        .map(|i| {
            InstanceConfig::new()
                .env("OTEL_SERVICE_NAME", service_name(i + 1))
                .env("RESPONSE_TIME", delay_ms(i).to_string())
        })
        .collect()
}

pub(super) fn service_name(hop: usize) -> String {
    crate::chain_file::service_name(&hop.to_string())
}

/// Spans of one request through the [`line()`] chain.
pub(super) fn spans_per_request(
    config: &BenchConfig,
    delay_ms: impl Fn(usize) -> u64,
    format: Format,
) -> anyhow::Result<usize> {
    Ok(expected_spans(&line(config, delay_ms)?, format).total())
}

pub(super) fn load(
    config: &BenchConfig,
    chain: &Chain,
    duration: Duration,
    rate: Option<f64>,
) -> Load {
    Load {
        url: chain.entry().url().to_string(),
        connections: config.connections,
        duration,
        rate,
        timeout: Duration::from_secs(30),
        json: false,
    }
}

/// CPU time of all the chain's instances.
pub(super) fn cpu(chain: &Chain) -> Duration {
    chain.hops.iter().filter_map(|i| i.cpu_time()).sum()
}

pub(super) fn rss(chain: &Chain) -> Vec<u64> {
    chain
        .hops
        .iter()
        .map(|i| i.rss_kib().unwrap_or(0))
        .collect()
}

/// SIGTERMs every hop and waits for it: the last spans are flushed.
pub(super) async fn stop(chain: &mut Chain) {
    for instance in &chain.hops {
        let _ = instance.terminate();
    }
    for instance in &mut chain.hops {
        instance.wait(Duration::from_secs(10)).await;
    }
}

/// How many of `traces`' spans arrived.
pub(super) fn received(spans: &[SpanStub], traces: &HashSet<u128>) -> usize {
    spans
        .iter()
        .filter(|s| traces.contains(&s.trace_id))
        .count()
}

pub(super) fn ok_traces<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> HashSet<u128> {
    samples
        .into_iter()
        .filter(|s| s.ok())
        .filter_map(Sample::trace_number)
        .collect()
}

pub(super) fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_bench_counts_the_spans_of_the_chain_it_starts() {
        let config = BenchConfig::new(PathBuf::from("microservice"));
        let chain = line(&config, |i| 50 * (i as u64 + 1)).unwrap();
        let names: Vec<String> = (0..config.hops).map(|i| chain.service_name(i)).collect();
        let started: Vec<String> = hops(&config, |_| 0)
            .iter()
            .map(|hop| hop.env[0].1.clone())
            .collect();
        assert_eq!(names, started, "the same service names");
        // Three hops in a row with delays: the default chain's trace.
        let default = crate::chain_file::Topology::default_chain().unwrap();
        assert_eq!(
            spans_per_request(&config, |_| 20, Format::Html).unwrap(),
            expected_spans(&default, Format::Html).total()
        );
        // No delay: no simulated work.
        assert_eq!(
            spans_per_request(&config, |_| 0, Format::Json).unwrap(),
            config.hops + (config.hops - 1)
        );
    }
}
