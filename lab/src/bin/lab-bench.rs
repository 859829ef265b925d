//! `cargo run --release --bin lab-bench`: runs the chain under load and
//! prints the figures the lab is judged by.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use lab::bench::report;
use lab::bench::{self, BenchConfig};
use lab::receiver::Protocol;

#[derive(Debug, Parser)]
#[command(
    name = "lab-bench",
    about = "Benchmark and fault harness for the microservice chain"
)]
struct Args {
    /// Instances in the chain.
    #[arg(long, default_value_t = 3)]
    hops: usize,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds per throughput setting.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Turns the measured seconds of each setting are split into.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Warm-up seconds before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Requests of the delay-fidelity mode (at 10 per second).
    #[arg(long, default_value_t = 400)]
    delay_requests: usize,
    /// Seconds per phase of the fault and shutdown modes.
    #[arg(long, default_value_t = 3.0)]
    phase: f64,
    /// OTLP protocol of the instances: grpc or http/protobuf.
    #[arg(long, default_value = "http/protobuf", value_parser = parse_protocol)]
    protocol: Protocol,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The service binary [default: built with cargo next to lab-bench].
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// TEMPLATES_DIR for the instances [default: the binary's own].
    #[arg(long)]
    templates_dir: Option<PathBuf>,
    /// KEY=VALUE added to every instance's environment, e.g.
    /// OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048 (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_hop_env)]
    hop_env: Vec<(String, String)>,
}

fn parse_hop_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(all_met) => {
            if all_met {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(error) => {
            eprintln!("lab-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let config = BenchConfig {
        templates_dir: args.templates_dir,
        protocol: args.protocol,
        hops: args.hops.max(1),
        connections: args.connections.max(1),
        duration: Duration::from_secs_f64(args.duration),
        rounds: args.rounds,
        warmup: Duration::from_secs_f64(args.warmup),
        phase: Duration::from_secs_f64(args.phase),
        delay_requests: args.delay_requests.max(1),
        hop_env: args.hop_env,
        ..BenchConfig::new(lab::service_binary::locate(args.service_bin, "lab-bench")?)
    };
    let report = bench::run(&config, &|step| eprintln!("lab-bench: {step}")).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report::table(&report));
    }
    Ok(report.targets.iter().all(|t| t.met))
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => Err(format!("{other:?}: expected grpc or http/protobuf")),
    }
}
