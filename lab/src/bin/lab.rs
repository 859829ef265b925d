//! `cargo run`: the lab on this machine, without a VM. Starts the chain as
//! processes of the `microservice` binary and shows the trace of every
//! request as a waterfall in this terminal.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lab::chain_file::{ChainFile, Topology};
use lab::runner::trace_view::Style;
use lab::runner::{self, RunnerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    about = "Runs the tracing lab's chain of microservices on this machine and draws the trace of each request in the terminal",
    after_help = "Without --chain, the default chain: microservice-1 (port 8080, 50 ms) → microservice-2 (8081, 100 ms) → microservice-3 (8082, 150 ms)."
)]
struct Args {
    /// A chain file: {"hops": [...]} as services.tracing-lab.chain has them
    /// (the VM's /etc/tracing-lab/lab.json works too).
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,

    /// Also send every span to a collector, e.g. Tempo or Jaeger, over
    /// OTLP/HTTP (base URL: /v1/traces is appended).
    #[arg(long, value_name = "URL", value_parser = parse_endpoint)]
    otlp_endpoint: Option<String>,

    /// Send this many requests per second to the entry on its own; their
    /// traces are counted, not drawn.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    load: Option<f64>,

    /// Draw the traces of --load too.
    #[arg(long)]
    show_load: bool,

    /// Where the runner receives the hops' spans [default: a free port].
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    receiver: std::net::SocketAddr,

    /// The microservice binary [default: built by cargo next to this one].
    #[arg(long, value_name = "PATH")]
    service_bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (chain, label) = match &args.chain {
        Some(path) => (ChainFile::read(path)?, format!("chain {}", path.display())),
        None => (Topology::default_chain()?, "the default chain".to_string()),
    };
    let binary = lab::service_binary::locate(args.service_bin, "lab")?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    runner::run(RunnerConfig {
        chain,
        label,
        binary,
        forward_to: args.otlp_endpoint,
        load_rate: args.load,
        show_load: args.show_load,
        style: if colour { Style::Colour } else { Style::Plain },
        receiver_addr: args.receiver,
        tail_sampling: None,
    })
    .await
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    match value.split_once("://") {
        Some(("http", rest)) if !rest.is_empty() => Ok(value.to_string()),
        Some(("https", _)) => Err("https is not supported (this build has no TLS)".into()),
        _ => Err("expected an http:// URL, e.g. http://localhost:4318".into()),
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1000.0 => Ok(rate),
        _ => Err("expected requests per second, more than 0 and at most 1000".into()),
    }
}
