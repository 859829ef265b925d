//! The lab runner (`cargo run`): starts a chain of `microservice` processes,
//! receives their spans itself and shows each finished trace as a waterfall
//! in the terminal; optionally forwards the spans to a real collector and
//! keeps a trickle of requests going. Ctrl-C or SIGTERM stops every hop it
//! started, each flushing its spans first.

pub mod attributes;
pub mod forward;
pub mod log_lines;
pub mod waterfall;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::chain::{Chain, STOP_TIMEOUT};
use crate::chain_file::Topology;
use crate::instance::InstanceConfig;
use crate::load::{self, TrickleCounts};
use crate::receiver::{OtlpReceiver, Protocol, ReceivedLog};
use crate::trace::tail_sampling::TailSampling;
use crate::trace::{Assembler, Trace, Verdict};
use attributes::Attributes;
use forward::Forwarder;
use log_lines::LogBook;
use waterfall::Style;

/// User agent of the runner's own load: its traces are counted, not drawn.
pub const LOAD_USER_AGENT: &str = concat!("lab-load/", env!("CARGO_PKG_VERSION"));

/// How quickly hops export: a trace should show within a second or two.
const HOP_EXPORT_DELAY_MS: &str = "200";
/// Quiet time after a root span before its trace is drawn.
const SETTLE: Duration = Duration::from_millis(600);
/// A trace whose root never arrives is drawn after this long.
const GIVE_UP: Duration = Duration::from_secs(4);
const LOAD_REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct RunnerConfig {
    pub chain: Topology,
    /// What the chain is, for the banner (an exercise's title, a file).
    pub label: String,
    /// A paragraph for the banner: what an exercise is about.
    pub intro: Option<String>,
    pub binary: PathBuf,
    /// Also send every span and log record to this collector (OTLP/HTTP
    /// base URL).
    pub forward_to: Option<String>,
    /// Requests per second the runner sends to the entry on its own.
    pub load_rate: Option<f64>,
    /// Draw the traces of that load too.
    pub show_load: bool,
    /// Print each span's log records under it.
    pub show_logs: bool,
    pub style: Style,
    /// The span attributes printed under each span.
    pub attributes: Attributes,
    /// Where the runner's receiver listens (port 0: any).
    pub receiver_addr: SocketAddr,
    /// Decides, per finished trace, whether it is kept (forwarded); `None`
    /// keeps every trace.
    pub tail_sampling: Option<TailSampling>,
}

pub async fn run(config: RunnerConfig) -> anyhow::Result<()> {
    let mut stop = stop_signal();
    let (receiver, mut batches) =
        OtlpReceiver::start_streaming(Protocol::HttpProtobuf, config.receiver_addr)?;
    // Without --logs or --otlp-endpoint the hops' records arrive and are dropped.
    let (mut log_batches, mut log_book) = (
        (config.show_logs || config.forward_to.is_some()).then(|| receiver.stream_logs()),
        LogBook::default(),
    );
    let common = InstanceConfig::new()
        .envs(receiver.env())
        .env("OTEL_BSP_SCHEDULE_DELAY", HOP_EXPORT_DELAY_MS)
        .env("OTEL_BLRP_SCHEDULE_DELAY", HOP_EXPORT_DELAY_MS);
    let mut running = Chain::start_topology(&config.binary, &common, &config.chain).await?;
    let chain = &config.chain;
    let entry_url = running.entry().url().to_string();

    let mut out = std::io::stdout();
    let _ = write!(out, "{}", banner(&config, &running, &receiver));
    let _ = out.flush();

    let forwarder = config
        .forward_to
        .as_deref()
        .map(Forwarder::start)
        .transpose()?;
    let load_counts = Arc::new(TrickleCounts::default());
    let load_task = config.load_rate.map(|rate| {
        tokio::spawn(load::trickle(
            entry_url.clone(),
            rate,
            LOAD_USER_AGENT,
            load_counts.clone(),
        ))
    });

    let mut assembler = Assembler::new(SETTLE, GIVE_UP);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = (Instant::now(), 0u64, 0u64, 0u64);
    // The load's slowest trace since the last report: the terminal's exemplar.
    let mut slowest: Option<Trace> = None;
    let failure = loop {
        tokio::select! {
            () = &mut stop => break None,
            Some(batch) = batches.recv() => assembler.add(batch, Instant::now()),
            Some(logs) = next_logs(&mut log_batches) => {
                book_logs(&mut log_book, logs, forwarder.as_ref());
            }
            _ = tick.tick() => {
                for trace in assembler.finished(Instant::now()) {
                    let logs = log_book.take(&trace.id);
                    let verdict = show(&config, &trace, &logs, forwarder.as_ref(), &mut out);
                    assembler.record(&trace, verdict);
                    keep_slowest(&mut slowest, trace);
                }
                if let Some(exit) = running.hops.iter_mut().enumerate().find_map(|(index, hop)| {
                    hop.exited().map(|status| (index, status))
                }) {
                    break Some(exit);
                }
                if load_task.is_some() && last_report.0.elapsed() >= LOAD_REPORT_EVERY {
                    last_report =
                        report_load(&config, &load_counts, last_report, slowest.take(), &mut out);
                }
            }
        }
    };

    if let Some(task) = &load_task {
        task.abort();
    }
    for index in running.stop(STOP_TIMEOUT).await {
        eprintln!(
            "lab: {} did not stop within {STOP_TIMEOUT:?} and was killed",
            chain.service_name(index)
        );
    }
    // The hops flushed before exiting; take what is still on its way in.
    let quiet = Instant::now() + Duration::from_millis(300);
    while let Ok(Some(batch)) = tokio::time::timeout_at(quiet.into(), batches.recv()).await {
        assembler.add(batch, Instant::now());
    }
    while let Some(Ok(logs)) = log_batches.as_mut().map(|batches| batches.try_recv()) {
        book_logs(&mut log_book, logs, forwarder.as_ref());
    }
    for trace in assembler.drain() {
        let logs = log_book.take(&trace.id);
        let verdict = show(&config, &trace, &logs, forwarder.as_ref(), &mut out);
        assembler.record(&trace, verdict);
    }
    if let Some(forwarder) = forwarder {
        forwarder.finish(Duration::from_secs(5)).await;
    }
    drop(receiver);
    match failure {
        None => {
            let count = running.hops.len();
            let _ = writeln!(out, "lab: stopped {count} hop{}", plural(count));
            Ok(())
        }
        Some((index, status)) => {
            let hop = &running.hops[index];
            let mut lines = hop.stdout();
            lines.extend(hop.stderr());
            let last_lines = lines[lines.len().saturating_sub(5)..].join("\n  ");
            anyhow::bail!(
                "hop `{}` ({}) exited on its own with {status}; the others were stopped. Its last lines:\n  {last_lines}",
                chain.hops[index].name,
                chain.service_name(index)
            )
        }
    }
}

fn banner(config: &RunnerConfig, running: &Chain, receiver: &OtlpReceiver) -> String {
    let entry_url = running.entry().url();
    let chain = &config.chain;
    let mut text = format!(
        "lab: {} — {} hop{}, their spans come here (OTLP/HTTP on {})",
        config.label,
        chain.hops.len(),
        plural(chain.hops.len()),
        receiver.endpoint()
    );
    if let Some(endpoint) = &config.forward_to {
        text.push_str(&format!(" and go on to {endpoint}"));
    }
    text.push('\n');
    let width = (0..chain.hops.len())
        .map(|i| chain.service_name(i).len())
        .max()
        .unwrap_or(0);
    for (index, spec) in chain.hops.iter().enumerate() {
        let url = running.hops[index].url();
        let callees: Vec<String> = chain.calls[index]
            .iter()
            .map(|&callee| chain.service_name(callee))
            .collect();
        let mut line = format!(
            "  {:<width$}  {url:<24}  {:>4} ms",
            chain.service_name(index),
            spec.response_time
        );
        if spec.jitter > 0 {
            line.push_str(&format!(" ± {}", spec.jitter));
        }
        if !callees.is_empty() {
            let mode = match (callees.len(), spec.call_mode) {
                (1, _) => "",
                (_, crate::chain_file::CallMode::Parallel) => " (in parallel)",
                (_, crate::chain_file::CallMode::Sequential) => " (one after the other)",
            };
            line.push_str(&format!("  → {}{mode}", callees.join(", ")));
        }
        text.push_str(&line);
        text.push('\n');
    }
    if let Some(intro) = &config.intro {
        text.push('\n');
        text.push_str(intro);
        text.push('\n');
    }
    text.push_str(&format!(
        "\nOpen {entry_url} in a browser (or: curl -s {entry_url} >/dev/null): the trace of each request appears below.\n"
    ));
    if let Some(shown) = config.attributes.describe() {
        text.push_str(&shown);
        text.push('\n');
    }
    if let Some(rate) = config.load_rate {
        text.push_str(&load_sentence(rate, config.show_load));
    }
    text.push_str("Ctrl-C stops the lab.\n\n");
    text
}

/// The banner's line on `--load`.
fn load_sentence(rate: f64, show_load: bool) -> String {
    format!(
        "A load of {rate} request{}/s runs in the background; every {} s the runner counts its requests and draws the slowest of their traces{}.\n",
        if rate == 1.0 { "" } else { "s" },
        LOAD_REPORT_EVERY.as_secs(),
        if show_load {
            " (--show-load: the others too)"
        } else {
            ""
        }
    )
}

/// Draws one finished trace (unless it is the runner's own load) and
/// forwards it when kept; late spans of a trace go where the trace went.
fn show(
    config: &RunnerConfig,
    trace: &Trace,
    logs: &[crate::receiver::ReceivedLog],
    forwarder: Option<&Forwarder>,
    out: &mut impl std::io::Write,
) -> Verdict {
    let (verdict, note) = match &trace.late {
        Some(late) => (late.verdict, None),
        None => {
            let (kept, note) = match &config.tail_sampling {
                Some(policies) => {
                    let (keep, note) = policies.decide(trace);
                    (keep, Some(note))
                }
                None => (true, None),
            };
            let shown = config.show_load || !is_load(trace);
            (Verdict { shown, kept }, note)
        }
    };
    if verdict.kept {
        if let Some(forwarder) = forwarder {
            forwarder.send(trace.spans.clone());
            forwarder.send_logs(logs.to_vec());
        }
    }
    if verdict.shown {
        let _ = write!(
            out,
            "{}",
            waterfall::render_with(
                trace,
                note.as_deref(),
                config.style,
                &config.attributes,
                logs
            )
        );
        let _ = out.flush();
    }
    verdict
}

/// Keeps a batch's records until their trace is drawn; those written outside
/// any span (start-up, shutdown) belong to no trace and go on at once.
fn book_logs(book: &mut LogBook, logs: Vec<ReceivedLog>, forwarder: Option<&Forwarder>) {
    let (untraced, traced): (Vec<ReceivedLog>, Vec<ReceivedLog>) =
        logs.into_iter().partition(|log| log.trace_id().is_empty());
    if let Some(forwarder) = forwarder {
        forwarder.send_logs(untraced);
    }
    book.add(traced, Instant::now());
}

/// The next batch of log records, when they are streamed (`--logs`,
/// `--otlp-endpoint`).
async fn next_logs(
    batches: &mut Option<crate::receiver::LogBatches>,
) -> Option<Vec<crate::receiver::ReceivedLog>> {
    match batches {
        Some(batches) => batches.recv().await,
        None => std::future::pending().await,
    }
}

/// A trace the runner's own load started.
fn is_load(trace: &Trace) -> bool {
    trace
        .root()
        .and_then(|root| root.attr("user_agent.original"))
        .is_some_and(|agent| agent.starts_with("lab-load/"))
}

/// Keeps `trace` if it is a whole trace of the runner's load slower than
/// the one kept.
fn keep_slowest(slowest: &mut Option<Trace>, trace: Trace) {
    if trace.late.is_none()
        && trace.root().is_some()
        && is_load(&trace)
        && slowest
            .as_ref()
            .is_none_or(|kept| trace.duration() > kept.duration())
    {
        *slowest = Some(trace);
    }
}

/// The load's counts since the last report, and its slowest trace in that
/// time, drawn unless `--show-load` drew it already.
fn report_load(
    config: &RunnerConfig,
    counts: &TrickleCounts,
    (since, sent_before, failed_before, unanswered_before): (Instant, u64, u64, u64),
    slowest: Option<Trace>,
    out: &mut impl std::io::Write,
) -> (Instant, u64, u64, u64) {
    let sent = counts.sent.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let unanswered = counts.unanswered.load(Ordering::Relaxed);
    let seconds = since.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "load: {} requests in the last {seconds:.0} s, {} answered non-2xx, {} unanswered",
        sent - sent_before,
        failed - failed_before,
        unanswered - unanswered_before
    );
    match slowest {
        Some(trace) => {
            let _ = writeln!(
                out,
                "load: the slowest, trace {} ({}){}\n",
                trace.id,
                waterfall::duration_text(trace.duration()),
                if config.show_load {
                    ", is drawn above"
                } else {
                    ":"
                }
            );
            if !config.show_load {
                let note = format!("the load's slowest in {seconds:.0} s");
                let _ = write!(
                    out,
                    "{}",
                    waterfall::render_with(
                        &trace,
                        Some(&note),
                        config.style,
                        &config.attributes,
                        &[]
                    )
                );
            }
        }
        None => {
            let _ = writeln!(out);
        }
    }
    let _ = out.flush();
    (Instant::now(), sent, failed, unanswered)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Resolves on the first SIGTERM or Ctrl-C; listening starts at once.
fn stop_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        Box::pin(async move {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {}
                () = wait(interrupt) => {}
            }
        })
    }
    #[cfg(not(unix))]
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::load_sentence;

    #[test]
    fn one_request_per_second_is_singular() {
        assert!(load_sentence(1.0, false).starts_with("A load of 1 request/s runs"));
        assert!(load_sentence(2.0, false).starts_with("A load of 2 requests/s runs"));
        assert!(load_sentence(0.5, true).starts_with("A load of 0.5 requests/s runs"));
        assert!(load_sentence(0.5, true).contains("(--show-load: the others too)"));
    }
}
