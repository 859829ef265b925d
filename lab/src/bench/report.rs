//! The benchmark's report: its figures, as JSON for machines and as a
//! table for people.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Summary;

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub throughput: Throughput,
    pub tracing_overhead: Overhead,
    pub signal_cost: SignalCost,
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
    /// OTEL_TRACES_SAMPLER=always_on, spans, log records and metrics
    /// exported over OTLP (the lab's default).
    pub sampled: Setting,
    /// Sampled, spans only: OTEL_LOGS_EXPORTER and OTEL_METRICS_EXPORTER `none`.
    pub sampled_traces_only: Setting,
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
    pub(super) fn of(expected: usize, received: usize) -> Self {
        Self {
            expected,
            received,
            lost: expected.saturating_sub(received),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    /// Sampled throughput, spans only, as a share of the disabled throughput.
    pub sampled_share_of_disabled: f64,
    /// Sampled HTML throughput as a share of sampled JSON throughput: what
    /// rendering the page costs.
    pub html_share_of_json: f64,
    pub sampled_out_share_of_disabled: f64,
    /// Extra CPU per request when sampled (spans only), over disabled, µs.
    pub sampled_extra_cpu_us_per_request: f64,
}

/// What logs and metrics add to the spans, the same chains side by side.
#[derive(Debug, Serialize)]
pub struct SignalCost {
    /// Throughput with traces, logs and metrics as a share of traces only.
    pub all_share_of_traces_only: f64,
    /// Throughput with all three as a share of the SDK disabled.
    pub all_share_of_disabled: f64,
    /// Extra CPU per request of logs and metrics over traces only, µs.
    pub extra_cpu_us_per_request: f64,
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

pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let setup = &report.setup;
    let _ = writeln!(
        out,
        "lab-bench: {} hops, {} connections, {} s per setting after {} s warm-up, {} CPUs, OTLP {}{}\n",
        setup.hops,
        setup.connections,
        setup.duration_s,
        setup.warmup_s,
        setup.cpus,
        setup.otlp_protocol,
        if setup.hop_env.is_empty() {
            String::new()
        } else {
            format!(", hops with {}", setup.hop_env.join(" "))
        }
    );

    let _ = writeln!(out, "1. Throughput and latency (RESPONSE_TIME=0)");
    let _ = writeln!(
        out,
        "   {:<22} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>18}",
        "setting",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "non-2xx",
        "CPU µs/req",
        "spans recv/expect"
    );
    let throughput = &report.throughput;
    for (name, setting) in [
        ("sampled (always_on)", &throughput.sampled),
        ("sampled, traces only", &throughput.sampled_traces_only),
        ("sampled, JSON", &throughput.sampled_json),
        ("sampled out", &throughput.sampled_out),
        ("SDK disabled", &throughput.disabled),
        ("sampled, half load", &throughput.sampled_half_capacity),
    ] {
        row(&mut out, name, setting);
    }

    let overhead = &report.tracing_overhead;
    let _ = writeln!(
        out,
        "\n2. Tracing overhead: sampled, traces only = {:.1} % of disabled throughput (sampled out: {:.1} %); +{:.0} µs CPU per request\n   The page: HTML = {:.1} % of JSON throughput, both sampled",
        overhead.sampled_share_of_disabled * 100.0,
        overhead.sampled_out_share_of_disabled * 100.0,
        overhead.sampled_extra_cpu_us_per_request,
        overhead.html_share_of_json * 100.0
    );
    let cost = &report.signal_cost;
    let _ = writeln!(
        out,
        "   Logs and metrics too: {:.1} % of traces-only throughput, {:.1} % of disabled; +{:.0} µs CPU per request",
        cost.all_share_of_traces_only * 100.0,
        cost.all_share_of_disabled * 100.0,
        cost.extra_cpu_us_per_request
    );

    let kib = |values: &[u64]| {
        values
            .iter()
            .map(|v| format!("{:.1}", *v as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let _ = writeln!(
        out,
        "\n3. Resident size per instance, MiB: idle {}; after the sampled load {}",
        kib(&report.memory.idle_kib),
        kib(&report.memory.after_load_kib)
    );

    let delay = &report.delay_fidelity;
    let _ = writeln!(
        out,
        "\n4. Delay fidelity: delays {:?} ms, {} requests; overshoot p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delay.configured_ms,
        delay.requests,
        delay.p50_overshoot_ms,
        delay.p95_overshoot_ms,
        delay.p99_overshoot_ms,
        delay.max_overshoot_ms
    );

    let faults = &report.collector_faults;
    let _ = writeln!(
        out,
        "\n5. Collector faults at {:.0} req/s ({} failed requests)",
        faults.rate, faults.failed_requests
    );
    let _ = writeln!(
        out,
        "   {:<22} {:>8} {:>8} {:>8} {:>10} {:>18}",
        "phase", "requests", "p99 ms", "failed", "max RSS", "spans recv/expect"
    );
    for phase in &faults.phases {
        let _ = writeln!(
            out,
            "   {:<22} {:>8} {:>8.2} {:>8} {:>6.1} MiB {:>18}",
            phase.phase,
            phase.summary.requests,
            phase.summary.p99_ms,
            phase.summary.non_2xx + phase.summary.errors,
            phase.max_rss_kib as f64 / 1024.0,
            format!("{}/{}", phase.spans.received, phase.spans.expected)
        );
    }

    let _ = writeln!(out, "\n6. SIGTERM under load");
    let _ = writeln!(
        out,
        "   {:<4} {:>8} {:>6} {:>12} {:>9} {:>16} {:>8} {:>18}",
        "hop",
        "requests",
        "ok",
        "after stop",
        "accepted",
        "accepted+failed",
        "exit ms",
        "spans recv/expect"
    );
    for run in &report.shutdown {
        let _ = writeln!(
            out,
            "   {:<4} {:>8} {:>6} {:>12} {:>9} {:>16} {:>8} {:>18}",
            run.hop,
            run.requests,
            run.ok,
            run.failed_after_stop,
            run.accepted_by_hop,
            run.accepted_but_failed,
            run.exit_ms.map_or("-".into(), |ms| format!("{ms:.0}")),
            format!("{}/{}", run.spans.received, run.spans.expected)
        );
    }

    let _ = writeln!(out, "\nTargets");
    for target in &report.targets {
        let _ = writeln!(
            out,
            "   [{}] {:<52} {:>10} (target {})",
            if target.met { "met" } else { "MISSED" },
            target.name,
            target.value,
            target.limit
        );
    }
    out
}

fn row(out: &mut String, name: &str, setting: &Setting) {
    let summary = &setting.summary;
    let spans = setting
        .spans
        .map_or("-".into(), |s| format!("{}/{}", s.received, s.expected));
    let _ = writeln!(
        out,
        "   {:<22} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>10.0} {:>18}",
        name,
        summary.requests_per_second,
        summary.p50_ms,
        summary.p90_ms,
        summary.p99_ms,
        summary.non_2xx + summary.errors,
        setting.cpu_us_per_request,
        spans
    );
}
