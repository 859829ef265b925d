//! `cargo run`: the lab on this machine, without a VM. Starts the chain as
//! processes of the `microservice` binary and shows the trace of every
//! request as a waterfall in this terminal.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lab::chain_file::{ChainFile, Topology};
use lab::runner::attributes::{self, Attributes, Selection};
use lab::runner::waterfall::Style;
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
    #[arg(long, value_name = "FILE", conflicts_with = "exercise")]
    chain: Option<PathBuf>,

    /// Run an exercise (see --list-exercises): its chain, and for
    /// tail-sampling the collector's decision on each trace.
    #[arg(long, value_name = "NAME")]
    exercise: Option<String>,

    /// List the exercises, a line each, and exit.
    #[arg(long)]
    list_exercises: bool,

    /// Also send every span and log record to a collector, e.g. an
    /// OpenTelemetry Collector, Tempo or Jaeger, over OTLP/HTTP (base URL:
    /// /v1/traces and /v1/logs are appended).
    #[arg(long, value_name = "URL", value_parser = parse_endpoint)]
    otlp_endpoint: Option<String>,

    /// Send this many requests per second to the entry on its own; their
    /// traces are counted, not drawn.
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, value_parser = parse_rate)]
    load: Option<f64>,

    /// Draw the traces of --load too.
    #[arg(long)]
    show_load: bool,

    #[arg(long, value_name = "LIST", help = attributes::HELP, value_parser = Selection::parse)]
    attributes: Option<Selection>,

    /// Print the log records each hop wrote under the span they were written in
    /// (an exercise may turn this on by default).
    #[arg(long)]
    logs: bool,

    /// Where the runner receives the hops' spans (port 0: a free one).
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
    let exercises_dir = lab::exercises::directory();
    if args.list_exercises {
        let exercises = lab::exercises::all(&exercises_dir)?;
        let width = exercises.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for exercise in exercises {
            // Listed all the same, so that the NixOS lab's name is known here.
            let note = if exercise.topology.is_multi_host() {
                " (multi-host: the NixOS lab only)"
            } else {
                ""
            };
            println!("{:<width$}  {}{note}", exercise.name, exercise.summary);
        }
        return Ok(());
    }
    let (mut tail_sampling, mut intro, mut shown) = (None, None, Selection::default());
    let mut exercise_logs = false;
    let (chain, label) = match (&args.chain, &args.exercise) {
        (Some(path), _) => (ChainFile::read(path)?, format!("chain {}", path.display())),
        (None, Some(name)) => {
            let exercise = lab::exercises::find(&exercises_dir, name)?;
            tail_sampling = exercise.tail_sampling()?;
            intro = Some(guide(&exercise));
            shown = exercise.terminal.attributes.clone();
            exercise_logs = exercise.terminal.logs;
            let label = format!("exercise {}: {}", exercise.name, exercise.title);
            (exercise.topology, label)
        }
        (None, None) => (Topology::default_chain()?, "the default chain".to_string()),
    };
    // Hops meant for other machines would run here, over loopback.
    chain.on_one_machine("the lab runner")?;
    let binary = lab::service_binary::locate(args.service_bin, "lab")?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let attributes = Attributes::new(args.attributes.unwrap_or(shown), &chain);
    runner::run(RunnerConfig {
        chain,
        label,
        intro,
        binary,
        forward_to: args.otlp_endpoint,
        load_rate: args.load,
        show_load: args.show_load,
        show_logs: args.logs || exercise_logs,
        style: if colour { Style::Colour } else { Style::Plain },
        attributes,
        receiver_addr: args.receiver,
        tail_sampling,
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

/// What an exercise asks, as the terminal shows it: where to look in the
/// waterfall (Grafana's version is for the VM and `nix run .#local`).
fn guide(exercise: &lab::exercises::Exercise) -> String {
    let guide = &exercise.guide;
    // An empty paragraph: a blank line between the setup and the questions.
    let mut paragraphs = vec![guide.setup.clone(), String::new()];
    if let Some(action) = &guide.action {
        paragraphs.push(format!("Do: {action}"));
    }
    paragraphs.push(format!("Look at: {}", guide.look_at.terminal));
    paragraphs.extend(exercise.runner_differs());
    paragraphs.push(format!("You should see: {}", guide.see));
    paragraphs.push(format!("Question: {}", guide.question));
    paragraphs.push(format!(
        "The answer, and where to look in Grafana: docs/exercises.md, \"{}\".",
        exercise.base
    ));
    let wrapped: Vec<String> = paragraphs.iter().map(|p| wrap(p, 88)).collect();
    wrapped.join("\n")
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_rate_is_refused_naming_the_flag() {
        for value in ["-1", "0", "NaN", "1001", "many"] {
            let error = Args::try_parse_from(["lab", "--load", value])
                .err()
                .unwrap_or_else(|| panic!("--load {value} was accepted"))
                .to_string();
            assert!(
                error.contains(&format!("invalid value '{value}' for '--load <RATE>'"))
                    && error.contains("more than 0 and at most 1000"),
                "{value}: {error}"
            );
        }
        let args = Args::try_parse_from(["lab", "--load", "0.5"]).unwrap();
        assert_eq!(args.load, Some(0.5));
    }

    #[test]
    fn attributes_are_a_list_and_none_clears_the_exercises() {
        let args = Args::try_parse_from(["lab", "--attributes", "error.type,http.*"]).unwrap();
        assert_eq!(args.attributes.unwrap().0.len(), 2);
        let args = Args::try_parse_from(["lab", "--attributes", "none"]).unwrap();
        assert!(args.attributes.unwrap().is_empty());
        let error = Args::try_parse_from(["lab", "--attributes", "http.*.x"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid value 'http.*.x' for '--attributes <LIST>'")
                && error.contains("`*` may only end a key"),
            "{error}"
        );
    }

    #[test]
    fn an_exercise_starts_with_the_terminal_side_of_its_guide() {
        let exercise =
            lab::exercises::find(&lab::exercises::directory(), "sampling-independent").unwrap();
        let text = guide(&exercise);
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let look_at = exercise.guide.look_at.terminal.split_whitespace();
        assert!(
            flat.contains(&format!(
                "Look at: {}",
                look_at.collect::<Vec<_>>().join(" ")
            )),
            "{text}"
        );
        assert!(!flat.contains("Explore"), "Grafana's side shown:\n{text}");
        assert!(flat.contains("Question: "), "{text}");
        assert!(flat.contains("docs/exercises.md, \"sampling\""), "{text}");
        assert!(
            text.lines().all(|line| line.chars().count() <= 88),
            "{text}"
        );
    }
}
