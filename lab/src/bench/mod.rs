//! The benchmark: six modes run side by side on chains of real instances,
//! one file each ([`throughput`] with the memory figures, [`delay_fidelity`],
//! [`collector_faults`], [`shutdown`]), judged by the [`targets`], written
//! up as a [`report`].

mod collector_faults;
mod delay_fidelity;
pub mod report;
mod shutdown;
pub mod targets;
mod throughput;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::chain::Chain;
use crate::chain_file::{ChainFile, Topology};
use crate::instance::InstanceConfig;
use crate::load::{Load, Sample};
use crate::receiver::{OtlpReceiver, Protocol, SpanStub};
use crate::trace::{Format, expected_spans};
use report::{Memory, Overhead, Report, Setup, Throughput};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The release binary of the service.
    pub binary: PathBuf,
    /// TEMPLATES_DIR for the instances; `None` = the binary's default.
    pub templates_dir: Option<PathBuf>,
    /// How the instances export: the lab's collector takes OTLP/HTTP.
    pub protocol: Protocol,
    pub hops: usize,
    pub connections: usize,
    /// Measured time per setting of mode 1, split over `rounds` turns.
    pub duration: Duration,
    pub rounds: usize,
    pub warmup: Duration,
    /// Length of each phase of the collector-fault and shutdown modes.
    pub phase: Duration,
    /// Requests of the delay-fidelity mode, and their rate.
    pub delay_requests: usize,
    pub delay_rate: f64,
    /// Extra environment for every instance, after the bench's own (so it
    /// can override the batching, say): for trying exporter settings.
    pub hop_env: Vec<(String, String)>,
}

impl BenchConfig {
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            templates_dir: None,
            protocol: Protocol::HttpProtobuf,
            hops: 3,
            connections: 16,
            duration: Duration::from_secs(10),
            rounds: 5,
            warmup: Duration::from_secs(2),
            phase: Duration::from_secs(3),
            delay_requests: 400,
            delay_rate: 10.0,
            hop_env: Vec::new(),
        }
    }

    /// A run of a few seconds that exercises every mode (for `cargo test`).
    pub fn smoke(binary: PathBuf) -> Self {
        Self {
            hops: 2,
            connections: 2,
            duration: Duration::from_millis(400),
            rounds: 2,
            warmup: Duration::from_millis(100),
            phase: Duration::from_millis(300),
            delay_requests: 4,
            delay_rate: 20.0,
            ..Self::new(binary)
        }
    }
}

pub async fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let [sampled, sampled_json, sampled_out, disabled] =
        throughput::throughput(config, progress).await?;
    let half = sampled.setting.summary.requests_per_second / 2.0;
    progress("mode 1: sampled at half capacity");
    let half_capacity = throughput::half_capacity(config, half).await?;
    progress("mode 4: delay fidelity");
    let delay_fidelity = delay_fidelity::run(config).await?;
    progress("mode 5: collector faults");
    let collector_faults = collector_faults::run(config, half).await?;
    let mut shutdown = Vec::new();
    for hop in 1..=config.hops {
        progress(&format!("mode 6: SIGTERM to hop {hop} under load"));
        shutdown.push(shutdown::run(config, hop).await?);
    }

    let share = |setting: &throughput::Run| {
        setting.setting.summary.requests_per_second
            / disabled
                .setting
                .summary
                .requests_per_second
                .max(f64::EPSILON)
    };
    let tracing_overhead = Overhead {
        sampled_share_of_disabled: round(share(&sampled)),
        html_share_of_json: round(
            sampled.setting.summary.requests_per_second
                / sampled_json
                    .setting
                    .summary
                    .requests_per_second
                    .max(f64::EPSILON),
        ),
        sampled_out_share_of_disabled: round(share(&sampled_out)),
        sampled_extra_cpu_us_per_request: round(
            sampled.setting.cpu_us_per_request - disabled.setting.cpu_us_per_request,
        ),
    };
    let memory = Memory {
        idle_kib: sampled.idle_kib.clone(),
        after_load_kib: sampled.setting.rss_after_kib.clone(),
    };
    let targets = targets::of(
        &tracing_overhead,
        &half_capacity.setting,
        &memory,
        &delay_fidelity,
        &collector_faults,
        &shutdown,
    );
    Ok(Report {
        setup: Setup {
            binary: config.binary.display().to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            otlp_protocol: config.protocol.env_value(),
            hops: config.hops,
            connections: config.connections,
            duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            hop_env: config
                .hop_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        },
        throughput: Throughput {
            sampled: sampled.setting,
            sampled_json: sampled_json.setting,
            sampled_out: sampled_out.setting,
            disabled: disabled.setting,
            sampled_half_capacity: half_capacity.setting,
        },
        tracing_overhead,
        memory,
        delay_fidelity,
        collector_faults,
        shutdown,
        targets,
    })
}

fn common(config: &BenchConfig, receiver: &OtlpReceiver) -> InstanceConfig {
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
fn line(config: &BenchConfig, delay_ms: impl Fn(usize) -> u64) -> anyhow::Result<Topology> {
    let hops: Vec<serde_json::Value> = (0..config.hops)
        .map(|i| serde_json::json!({"name": (i + 1).to_string(), "responseTime": delay_ms(i)}))
        .collect();
    let file: ChainFile = serde_json::from_value(serde_json::json!({ "hops": hops }))?;
    file.check()
}

/// Each hop's own settings for [`Chain::start`], which links them.
fn hops(config: &BenchConfig, delay_ms: impl Fn(usize) -> u64) -> Vec<InstanceConfig> {
    (0..config.hops)
        .map(|i| {
            InstanceConfig::new()
                .env("OTEL_SERVICE_NAME", service_name(i + 1))
                .env("RESPONSE_TIME", delay_ms(i).to_string())
        })
        .collect()
}

fn service_name(hop: usize) -> String {
    crate::chain_file::service_name(&hop.to_string())
}

/// Spans of one request through the [`line`] chain.
fn spans_per_request(
    config: &BenchConfig,
    delay_ms: impl Fn(usize) -> u64,
    format: Format,
) -> anyhow::Result<usize> {
    Ok(expected_spans(&line(config, delay_ms)?, format).total())
}

fn load(config: &BenchConfig, chain: &Chain, duration: Duration, rate: Option<f64>) -> Load {
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
fn cpu(chain: &Chain) -> Duration {
    chain.hops.iter().filter_map(|i| i.cpu_time()).sum()
}

fn rss(chain: &Chain) -> Vec<u64> {
    chain
        .hops
        .iter()
        .map(|i| i.rss_kib().unwrap_or(0))
        .collect()
}

/// SIGTERMs every hop and waits for it: the last spans are flushed.
async fn stop(chain: &mut Chain) {
    for instance in &chain.hops {
        let _ = instance.terminate();
    }
    for instance in &mut chain.hops {
        instance.wait(Duration::from_secs(10)).await;
    }
}

/// How many of `traces`' spans arrived.
fn received(spans: &[SpanStub], traces: &HashSet<u128>) -> usize {
    spans
        .iter()
        .filter(|s| traces.contains(&s.trace_id))
        .count()
}

fn ok_traces<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> HashSet<u128> {
    samples
        .into_iter()
        .filter(|s| s.ok())
        .filter_map(Sample::trace_number)
        .collect()
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
