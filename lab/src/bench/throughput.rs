//! Mode 1, throughput and latency in five settings (sampled with traces,
//! logs and metrics, sampled with traces only, sampled JSON, sampled out,
//! SDK disabled) and sampled again at half that load; mode 3's memory
//! figures come from the same chains.

use std::time::Duration;

use super::config::BenchConfig;
use super::report::{Setting, SpanCount};
use super::setup::{
    common, cpu, hops, load, ok_traces, received, round, rss, spans_per_request, stop,
};
use crate::chain::Chain;
use crate::load::{self as load_gen, Load, Sample, Summary};
use crate::receiver::OtlpReceiver;
use crate::trace::Format;

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

/// Which signals a sampled chain exports besides its spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signals {
    /// Traces, logs and metrics: the lab's default.
    All,
    TracesOnly,
}

impl Signals {
    fn env(self) -> [(&'static str, &'static str); 2] {
        let exporter = match self {
            Signals::All => "otlp",
            Signals::TracesOnly => "none",
        };
        [
            ("OTEL_LOGS_EXPORTER", exporter),
            ("OTEL_METRICS_EXPORTER", exporter),
        ]
    }
}

pub(super) struct Run {
    pub(super) setting: Setting,
    pub(super) idle_kib: Vec<u64>,
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
    /// Spans each request's trace should have.
    spans_per_request: usize,
}

impl Subject {
    async fn start(
        config: &BenchConfig,
        sampling: Sampling,
        signals: Signals,
        json: bool,
    ) -> anyhow::Result<Self> {
        let receiver = OtlpReceiver::start_counting(config.protocol)?;
        let (key, value) = sampling.env();
        let mut common = common(config, &receiver).env(key, value);
        for (key, value) in signals.env() {
            common = common.env(key, value);
        }
        let chain = Chain::start(&config.binary, &common, &hops(config, |_| 0)).await?;
        let idle_kib = rss(&chain);
        let format = if json { Format::Json } else { Format::Html };
        let spans_per_request = spans_per_request(config, |_| 0, format)?;
        Ok(Self {
            sampling,
            json,
            receiver,
            chain,
            idle_kib,
            samples: Vec::new(),
            cpu: Duration::ZERO,
            spans_per_request,
        })
    }

    /// Load that is not counted, so the measured rounds start warm.
    async fn warm_up(&mut self, config: &BenchConfig) {
        let spec = Load {
            json: self.json,
            ..load(config, &self.chain, config.warmup, None)
        };
        load_gen::run(&spec).await;
    }

    async fn measure(&mut self, config: &BenchConfig, duration: Duration, rate: Option<f64>) {
        let before = cpu(&self.chain);
        let spec = Load {
            json: self.json,
            ..load(config, &self.chain, duration, rate)
        };
        let mut samples = load_gen::run(&spec).await;
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
            SpanCount::of(
                traces.len() * self.spans_per_request,
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

/// Mode 1 (and the memory figures of mode 3): the settings on chains of
/// their own, measured in turns so that a change in the machine's load
/// falls on all of them alike: [sampled, sampled with traces only, sampled
/// JSON, sampled out, disabled].
pub(super) async fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<[Run; 5]> {
    let mut subjects = Vec::new();
    for (sampling, signals, json) in [
        (Sampling::AlwaysOn, Signals::All, false),
        (Sampling::AlwaysOn, Signals::TracesOnly, false),
        (Sampling::AlwaysOn, Signals::All, true),
        (Sampling::AlwaysOff, Signals::All, false),
        (Sampling::Disabled, Signals::All, false),
    ] {
        let mut subject = Subject::start(config, sampling, signals, json).await?;
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
        .map_err(|_| anyhow::anyhow!("five settings were measured"))
}

/// Mode 1 again, sampled and paced to `rate`: nothing may be lost there.
pub(super) async fn half_capacity(config: &BenchConfig, rate: f64) -> anyhow::Result<Run> {
    let mut subject = Subject::start(config, Sampling::AlwaysOn, Signals::All, false).await?;
    load_gen::run(&load(config, &subject.chain, config.warmup, Some(rate))).await;
    subject.measure(config, config.duration, Some(rate)).await;
    Ok(subject.finish(config).await)
}
