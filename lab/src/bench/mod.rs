//! The benchmark: six modes run side by side on chains of real instances,
//! one file each (`throughput.rs` with the memory figures,
//! `delay_fidelity.rs`, `collector_faults.rs`, `shutdown.rs`) on what they
//! share (`setup.rs`), judged by the [`targets`], written up as a
//! [`report`].

mod collector_faults;
mod config;
mod delay_fidelity;
pub mod report;
mod setup;
mod shutdown;
pub mod targets;
mod throughput;

pub use config::BenchConfig;
use report::{Memory, Overhead, Report, Setup, SignalCost, Throughput};
use setup::round;

pub async fn run(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let [sampled, traces_only, sampled_json, sampled_out, disabled] =
        throughput::run(config, progress).await?;
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

    let share_of = |setting: &throughput::Run, of: &throughput::Run| {
        setting.setting.summary.requests_per_second
            / of.setting.summary.requests_per_second.max(f64::EPSILON)
    };
    let share = |setting: &throughput::Run| share_of(setting, &disabled);
    let signal_cost = SignalCost {
        all_share_of_traces_only: round(share_of(&sampled, &traces_only)),
        all_share_of_disabled: round(share(&sampled)),
        extra_cpu_us_per_request: round(
            sampled.setting.cpu_us_per_request - traces_only.setting.cpu_us_per_request,
        ),
    };
    let tracing_overhead = Overhead {
        sampled_share_of_disabled: round(share(&traces_only)),
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
            traces_only.setting.cpu_us_per_request - disabled.setting.cpu_us_per_request,
        ),
    };
    let memory = Memory {
        idle_kib: sampled.idle_kib.clone(),
        after_load_kib: sampled.setting.rss_after_kib.clone(),
    };
    let targets = targets::of(
        &tracing_overhead,
        &signal_cost,
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
            sampled_traces_only: traces_only.setting,
            sampled_json: sampled_json.setting,
            sampled_out: sampled_out.setting,
            disabled: disabled.setting,
            sampled_half_capacity: half_capacity.setting,
        },
        tracing_overhead,
        signal_cost,
        memory,
        delay_fidelity,
        collector_faults,
        shutdown,
        targets,
    })
}
