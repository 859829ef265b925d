//! The benchmark's six modes, run side by side, and the report they make.

pub mod report;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::chain::Chain;
use crate::instance::InstanceConfig;
use crate::load::{self, Load, Sample, Summary};
use crate::receiver::{OtlpReceiver, Protocol, SpanKind, SpanStub};

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

/// The targets the lab is judged by.
pub const MIN_TRACING_SHARE: f64 = 0.90;
pub const MIN_HTML_SHARE_OF_JSON: f64 = 0.90;
pub const MAX_RSS_KIB: u64 = 12 * 1024;
pub const MAX_DELAY_OVERSHOOT_MS: f64 = 3.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub throughput: Throughput,
    pub tracing_overhead: Overhead,
    pub memory: Memory,
    pub delay_fidelity: DelayFidelity,
    pub collector_faults: CollectorFaults,
    pub shutdown: Vec<ShutdownRun>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub binary: String,
    pub cpus: usize,
    pub otlp_protocol: &'static str,
    pub hops: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// `--hop-env` as given, KEY=VALUE.
    pub hop_env: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    /// OTEL_TRACES_SAMPLER=always_on, exported over OTLP.
    pub sampled: Setting,
    /// Sampled too, asking for the JSON answer: no templates.
    pub sampled_json: Setting,
    /// OTEL_TRACES_SAMPLER=always_off: spans made but not recorded.
    pub sampled_out: Setting,
    /// OTEL_SDK_DISABLED=true.
    pub disabled: Setting,
    /// Sampled again, paced to half the sampled throughput.
    pub sampled_half_capacity: Setting,
}

#[derive(Debug, Serialize)]
pub struct Setting {
    #[serde(flatten)]
    pub summary: Summary,
    /// CPU time of all instances per request, in microseconds: steadier on
    /// a shared machine than requests per second.
    pub cpu_us_per_request: f64,
    /// Resident size of each instance after the load, KiB.
    pub rss_after_kib: Vec<u64>,
    pub spans: Option<SpanCount>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SpanCount {
    pub expected: usize,
    pub received: usize,
    pub lost: usize,
}

impl SpanCount {
    fn of(expected: usize, received: usize) -> Self {
        Self {
            expected,
            received,
            lost: expected.saturating_sub(received),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    /// Sampled throughput as a share of the disabled throughput.
    pub sampled_share_of_disabled: f64,
    /// Sampled HTML throughput as a share of sampled JSON throughput: what
    /// rendering the page costs.
    pub html_share_of_json: f64,
    pub sampled_out_share_of_disabled: f64,
    /// Extra CPU per request when sampled, over disabled, in microseconds.
    pub sampled_extra_cpu_us_per_request: f64,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Resident size of each instance before any request, KiB.
    pub idle_kib: Vec<u64>,
    /// After the sampled load of mode 1, KiB.
    pub after_load_kib: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct DelayFidelity {
    pub configured_ms: Vec<u64>,
    pub requests: usize,
    pub p50_overshoot_ms: f64,
    pub p95_overshoot_ms: f64,
    pub p99_overshoot_ms: f64,
    pub max_overshoot_ms: f64,
    pub non_2xx: usize,
}

#[derive(Debug, Serialize)]
pub struct CollectorFaults {
    pub rate: f64,
    pub phases: Vec<FaultPhase>,
    /// Requests that did not answer 2xx, over all phases.
    pub failed_requests: usize,
}

#[derive(Debug, Serialize)]
pub struct FaultPhase {
    pub phase: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    /// Largest resident size of any instance during the phase, KiB.
    pub max_rss_kib: u64,
    /// Spans of this phase's requests.
    pub spans: SpanCount,
}

#[derive(Debug, Serialize)]
pub struct ShutdownRun {
    /// The hop that got SIGTERM (1 = entry).
    pub hop: usize,
    pub requests: usize,
    pub ok: usize,
    /// Failed because the hop had stopped: what the test causes on purpose.
    pub failed_after_stop: usize,
    /// Requests the stopped hop had accepted (its server span arrived).
    pub accepted_by_hop: usize,
    /// Of those, how many did not answer 2xx: must be 0.
    pub accepted_but_failed: usize,
    pub exit_ms: Option<f64>,
    pub exit_ok: bool,
    /// Spans of the requests that answered 2xx.
    pub spans: SpanCount,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub value: f64,
    pub limit: String,
    pub met: bool,
}

/// Spans one HTML request through `hops` hops makes: per hop a server span,
/// a template load and a render, a client span per call, and a
/// simulated-work span where the delay > 0.
pub fn spans_per_request(hops: usize, with_delay: bool) -> usize {
    let calls = hops.saturating_sub(1);
    hops * 3 + calls + if with_delay { hops } else { 0 }
}

/// Spans of a JSON request through `hops` hops without delay: a server span
/// per hop and a client span per call.
pub fn json_spans_per_request(hops: usize) -> usize {
    hops + hops.saturating_sub(1)
}

pub async fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let [sampled, sampled_json, sampled_out, disabled] = throughput(config, progress).await?;
    let half = sampled.setting.summary.requests_per_second / 2.0;
    progress("mode 1: sampled at half capacity");
    let half_capacity = half_capacity(config, half).await?;
    progress("mode 4: delay fidelity");
    let delay_fidelity = delay_fidelity(config).await?;
    progress("mode 5: collector faults");
    let collector_faults = collector_faults(config, half).await?;
    let mut shutdown = Vec::new();
    for hop in 1..=config.hops {
        progress(&format!("mode 6: SIGTERM to hop {hop} under load"));
        shutdown.push(shutdown_under_load(config, hop).await?);
    }

    let share = |setting: &Run| {
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
    let targets = targets(
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

fn targets(
    overhead: &Overhead,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    AlwaysOn,
    AlwaysOff,
    Disabled,
}

impl Sampling {
    fn env(self) -> (&'static str, &'static str) {
        match self {
            Sampling::AlwaysOn => ("OTEL_TRACES_SAMPLER", "always_on"),
            Sampling::AlwaysOff => ("OTEL_TRACES_SAMPLER", "always_off"),
            Sampling::Disabled => ("OTEL_SDK_DISABLED", "true"),
        }
    }
}

struct Run {
    setting: Setting,
    idle_kib: Vec<u64>,
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
    format!("microservice-{hop}")
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

/// One chain under test in mode 1, with its own receiver.
struct Subject {
    sampling: Sampling,
    /// Asks for the JSON answer instead of the page.
    json: bool,
    receiver: OtlpReceiver,
    chain: Chain,
    idle_kib: Vec<u64>,
    samples: Vec<Sample>,
    cpu: Duration,
}

impl Subject {
    async fn start(config: &BenchConfig, sampling: Sampling, json: bool) -> anyhow::Result<Self> {
        let receiver = OtlpReceiver::start_counting(config.protocol)?;
        let (key, value) = sampling.env();
        let common = common(config, &receiver).env(key, value);
        let chain = Chain::start(&config.binary, &common, &hops(config, |_| 0)).await?;
        let idle_kib = rss(&chain);
        Ok(Self {
            sampling,
            json,
            receiver,
            chain,
            idle_kib,
            samples: Vec::new(),
            cpu: Duration::ZERO,
        })
    }

    /// Load that is not counted, so the measured rounds start warm.
    async fn warm_up(&mut self, config: &BenchConfig) {
        let spec = Load {
            json: self.json,
            ..load(config, &self.chain, config.warmup, None)
        };
        load::run(&spec).await;
    }

    async fn measure(&mut self, config: &BenchConfig, duration: Duration, rate: Option<f64>) {
        let before = cpu(&self.chain);
        let spec = Load {
            json: self.json,
            ..load(config, &self.chain, duration, rate)
        };
        let mut samples = load::run(&spec).await;
        self.cpu += cpu(&self.chain).saturating_sub(before);
        self.samples.append(&mut samples);
    }

    /// Stops the chain (flushing its spans) and sums up.
    async fn finish(mut self, config: &BenchConfig) -> Run {
        let rss_after_kib = rss(&self.chain);
        stop(&mut self.chain).await;
        let summary = Summary::of(&self.samples, config.duration);
        let cpu_us_per_request =
            round(self.cpu.as_secs_f64() * 1e6 / summary.requests.max(1) as f64);
        let spans = (self.sampling == Sampling::AlwaysOn).then(|| {
            let traces = ok_traces(&self.samples);
            let per_request = if self.json {
                json_spans_per_request(config.hops)
            } else {
                spans_per_request(config.hops, false)
            };
            SpanCount::of(
                traces.len() * per_request,
                received(&self.receiver.stubs(), &traces),
            )
        });
        Run {
            setting: Setting {
                summary,
                cpu_us_per_request,
                rss_after_kib,
                spans,
            },
            idle_kib: self.idle_kib,
        }
    }
}

/// Mode 1 (and the memory figures of mode 3): the three settings on chains
/// of their own, measured in turns so that a change in the machine's load
/// falls on all of them alike.
async fn throughput(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<[Run; 4]> {
    let mut subjects = Vec::new();
    for (sampling, json) in [
        (Sampling::AlwaysOn, false),
        (Sampling::AlwaysOn, true),
        (Sampling::AlwaysOff, false),
        (Sampling::Disabled, false),
    ] {
        let mut subject = Subject::start(config, sampling, json).await?;
        subject.warm_up(config).await;
        subjects.push(subject);
    }
    let rounds = config.rounds.max(1);
    let slice = config.duration / rounds as u32;
    for round in 1..=rounds {
        progress(&format!("mode 1: throughput, round {round} of {rounds}"));
        for subject in &mut subjects {
            subject.measure(config, slice, None).await;
        }
    }
    let mut runs = Vec::new();
    for subject in subjects {
        runs.push(subject.finish(config).await);
    }
    runs.try_into()
        .map_err(|_| anyhow::anyhow!("four settings were measured"))
}

/// Mode 1 again, sampled and paced to `rate`: nothing may be lost there.
async fn half_capacity(config: &BenchConfig, rate: f64) -> anyhow::Result<Run> {
    let mut subject = Subject::start(config, Sampling::AlwaysOn, false).await?;
    load::run(&load(config, &subject.chain, config.warmup, Some(rate))).await;
    subject.measure(config, config.duration, Some(rate)).await;
    Ok(subject.finish(config).await)
}

/// Mode 4: end-to-end latency minus the configured delays, at a low rate.
async fn delay_fidelity(config: &BenchConfig) -> anyhow::Result<DelayFidelity> {
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

/// Mode 5: the receiver goes down, comes back, hangs, comes back, while a
/// paced load runs through the chain.
async fn collector_faults(config: &BenchConfig, rate: f64) -> anyhow::Result<CollectorFaults> {
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
    load::run(&load(config, &chain, config.warmup, Some(rate))).await;

    let phase = config.phase;
    let spec = load(config, &chain, phase * PHASES.len() as u32, Some(rate));
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
    let per_request = spans_per_request(config.hops, false);
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

/// Mode 6: SIGTERM to `hop` while requests flow through the chain.
async fn shutdown_under_load(config: &BenchConfig, hop: usize) -> anyhow::Result<ShutdownRun> {
    const HOP_DELAY_MS: u64 = 20;
    let receiver = OtlpReceiver::start_counting(config.protocol)?;
    let mut chain = Chain::start(
        &config.binary,
        &common(config, &receiver),
        &hops(config, |_| HOP_DELAY_MS),
    )
    .await?;
    let spec = load(config, &chain, config.phase * 2, None);
    let target = &mut chain.hops[hop - 1];
    let signal = async {
        tokio::time::sleep(config.phase).await;
        let sent = Instant::now();
        target.terminate()?;
        let exited = target.wait(Duration::from_secs(10)).await;
        anyhow::Ok((load::millis(sent.elapsed()), exited))
    };
    let (samples, signalled) = tokio::join!(load::run(&spec), signal);
    let (took_ms, exited) = signalled?;
    let exit_ms = exited.map(|_| took_ms);
    let exit_ok = exited.is_some_and(|status| status.success());
    stop(&mut chain).await;

    let spans = receiver.stubs();
    let stopped_service = service_name(hop);
    let accepted: HashSet<u128> = spans
        .iter()
        .filter(|s| *s.service == stopped_service && s.kind == SpanKind::Server)
        .map(|s| s.trace_id)
        .collect();
    let accepted_but_failed = samples
        .iter()
        .filter(|s| !s.ok())
        .filter(|s| s.trace_number().is_some_and(|t| accepted.contains(&t)))
        .count();
    let ok = ok_traces(&samples);
    Ok(ShutdownRun {
        hop,
        requests: samples.len(),
        ok: samples.iter().filter(|s| s.ok()).count(),
        failed_after_stop: samples.iter().filter(|s| !s.ok()).count() - accepted_but_failed,
        accepted_by_hop: accepted.len(),
        accepted_but_failed,
        exit_ms,
        exit_ok,
        spans: SpanCount::of(
            ok.len() * spans_per_request(config.hops, true),
            received(&spans, &ok),
        ),
    })
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::spans_per_request;

    #[test]
    fn span_counts_match_the_service() {
        // One hop alone: server, template load, render.
        assert_eq!(spans_per_request(1, false), 3);
        // 4 + 4 + 3 without the delay spans; 14 with them, as tests/lab/spans.rs counts.
        assert_eq!(spans_per_request(3, false), 11);
        assert_eq!(spans_per_request(3, true), 14);
    }
}
