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
    #[arg(long, allow_negative_numbers = true, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    hops: u16,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, allow_negative_numbers = true, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,
    /// Measured seconds per throughput setting.
    #[arg(long, allow_negative_numbers = true, value_name = "SECONDS", default_value = "10", value_parser = positive_seconds)]
    duration: Duration,
    /// Turns the measured seconds of each setting are split into.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Warm-up seconds before each measurement.
    #[arg(long, allow_negative_numbers = true, value_name = "SECONDS", default_value = "2", value_parser = seconds)]
    warmup: Duration,
    /// Requests of the delay-fidelity mode (at 10 per second).
    #[arg(long, allow_negative_numbers = true, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    delay_requests: u32,
    /// Seconds per phase of the fault and shutdown modes.
    #[arg(long, allow_negative_numbers = true, value_name = "SECONDS", default_value = "3", value_parser = positive_seconds)]
    phase: Duration,
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
        hops: args.hops.into(),
        connections: args.connections.into(),
        duration: args.duration,
        rounds: args.rounds.into(),
        warmup: args.warmup,
        phase: args.phase,
        delay_requests: args.delay_requests as usize,
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

/// Longest a measured time may be: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// Seconds, 0 or more.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=MAX_SECONDS).contains(&value) => Ok(Duration::from_secs_f64(value)),
        _ => Err(format!(
            "expected seconds, 0 or more and at most {MAX_SECONDS}"
        )),
    }
}

/// Seconds, more than 0.
fn positive_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= MAX_SECONDS => Ok(Duration::from_secs_f64(value)),
        _ => Err(format!(
            "expected seconds, more than 0 and at most {MAX_SECONDS}"
        )),
    }
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => Err(format!("{other:?}: expected grpc or http/protobuf")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(args: &[&str]) -> String {
        let mut all = vec!["lab-bench"];
        all.extend(args.iter().filter(|a| !a.is_empty()));
        match Args::try_parse_from(all) {
            Ok(parsed) => panic!("{args:?} was accepted: {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn every_numeric_flag_refuses_what_it_cannot_use_naming_the_flag() {
        for (args, flag, words) in [
            (["--duration", "-1"], "--duration", "more than 0"),
            (["--duration", "0"], "--duration", "more than 0"),
            (["--duration", "NaN"], "--duration", "more than 0"),
            (["--phase", "inf"], "--phase", "at most 86400"),
            (["--warmup", "-0.5"], "--warmup", "0 or more"),
            (["--hops", "0"], "--hops", "not in 1.."),
            (["--connections", "0"], "--connections", "not in 1.."),
            (["--rounds", "0"], "--rounds", "not in 1.."),
            (["--delay-requests", "0"], "--delay-requests", "not in 1.."),
            (["--hops", "-3"], "--hops", ""),
            (["--duration=-1", ""], "--duration", "more than 0"),
        ] {
            let message = error(&args);
            assert!(
                message.contains(&format!("'{flag} <")) && message.contains(words),
                "{args:?}: {message}"
            );
        }
    }

    #[test]
    fn the_defaults_parse() {
        let args =
            Args::try_parse_from(["lab-bench", "--warmup", "0", "--duration", "0.5"]).unwrap();
        assert_eq!(args.duration, Duration::from_millis(500));
        assert_eq!(args.warmup, Duration::ZERO);
        assert_eq!((args.hops, args.rounds), (3, 5));
    }
}
