//! The benchmark's report as a table for people.

use std::fmt::Write as _;

use crate::bench::{Report, Setting};

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
        "\n2. Tracing overhead: sampled = {:.1} % of disabled throughput (sampled out: {:.1} %); +{:.0} µs CPU per request\n   The page: HTML = {:.1} % of JSON throughput, both sampled",
        overhead.sampled_share_of_disabled * 100.0,
        overhead.sampled_out_share_of_disabled * 100.0,
        overhead.sampled_extra_cpu_us_per_request,
        overhead.html_share_of_json * 100.0
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
