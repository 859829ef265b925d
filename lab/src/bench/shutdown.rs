//! Mode 6: SIGTERM to one hop while requests flow through the chain; the
//! requests it accepted must still be answered, and their spans arrive.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::config::BenchConfig;
use super::report::{ShutdownRun, SpanCount};
use super::setup::{
    common, hops, load as load_spec, ok_traces, received, service_name, spans_per_request, stop,
};
use crate::chain::Chain;
use crate::load;
use crate::receiver::{OtlpReceiver, SpanKind};
use crate::trace::Format;

/// Mode 6: SIGTERM to `hop` while requests flow through the chain.
pub(super) async fn run(config: &BenchConfig, hop: usize) -> anyhow::Result<ShutdownRun> {
    const HOP_DELAY_MS: u64 = 20;
    let receiver = OtlpReceiver::start_counting(config.protocol)?;
    let mut chain = Chain::start(
        &config.binary,
        &common(config, &receiver),
        &hops(config, |_| HOP_DELAY_MS),
    )
    .await?;
    let spec = load_spec(config, &chain, config.phase * 2, None);
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
            ok.len() * spans_per_request(config, |_| HOP_DELAY_MS, Format::Html)?,
            received(&spans, &ok),
        ),
    })
}
