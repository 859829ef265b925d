//! Every exercise against its signature (`"signature"` in
//! `exercises/<name>.json`, checked by `lab::exercises::signature`): the
//! exercise's chain started as processes on free ports, real requests, the
//! spans an in-process OTLP receiver got.

// Tests fail loudly: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lab::chain::{Chain, STOP_TIMEOUT};
use lab::exercises::{self, signature::Answered};
use lab::instance::InstanceConfig;
use lab::receiver::{OtlpReceiver, Protocol};
use lab::testing::{SPAN_WAIT, requests};
use lab::trace::expected::SERVER;

/// How long nothing must arrive before the spans count as all in: longer
/// than the timeout exercise's leaf outlives its trace, and many times the
/// hops' export interval, with room for load.
const QUIET: Duration = Duration::from_secs(3);

/// How many failures a failed test lists.
const SHOWN: usize = 12;

/// Starts `name`'s chain, sends its signature's requests and checks what
/// arrived against the signature.
async fn check(name: &str) {
    let mut exercise = exercises::find(&exercises::directory(), name).unwrap();
    for hop in &mut exercise.topology.hops {
        hop.port = 0;
    }
    let tail = exercise.tail_sampling().unwrap();
    let signature = &exercise.signature;
    let receiver = OtlpReceiver::start(Protocol::Grpc).unwrap();
    // Exports every 100 ms instead of every 5 s (1 s for logs): the quiet
    // wait below then sees every hop's spans and log lines.
    let common = InstanceConfig::new()
        .envs(receiver.env())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100");
    let mut chain = Chain::start_topology(lab::testing::binary(), &common, &exercise.topology)
        .await
        .unwrap();

    let answers: Vec<Answered> = requests(
        chain.entry().url(),
        signature.requests,
        signature.concurrency,
    )
    .await
    .into_iter()
    .map(|r| Answered {
        status: r.status,
        trace_id: r.trace_id,
        sampled: r.sampled,
    })
    .collect();
    wait_for_spans(&receiver, &exercise.topology.service_name(0), &answers).await;
    let failures = signature.check(
        &exercise.topology,
        tail.as_ref(),
        &answers,
        &receiver.spans(),
        &receiver.logs(),
    );
    chain.stop(STOP_TIMEOUT).await;
    // A broken signature fails every request alike: a few lines say it.
    let shown: Vec<&str> = failures.iter().take(SHOWN).map(String::as_str).collect();
    let more = match failures.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!("\n… and {n} more"),
    };
    assert!(
        failures.is_empty(),
        "exercise {name} (exercises/{}.json): its traces do not show its signature:\n- {}{more}",
        exercise.base,
        shown.join("\n- ")
    );
}

/// Until the root span of every sampled request arrived and then nothing
/// more for [`QUIET`] (late and detached spans have come).
async fn wait_for_spans(receiver: &OtlpReceiver, entry: &str, answers: &[Answered]) {
    let rooted = receiver
        .wait_until(SPAN_WAIT, |spans| {
            answers.iter().filter(|a| a.sampled).all(|a| {
                spans.iter().any(|s| {
                    s.trace_id() == a.trace_id
                        && s.service == entry
                        && s.name() == SERVER
                        && s.parent_id().is_empty()
                })
            })
        })
        .await;
    assert!(rooted.is_ok(), "the sampled requests' root spans arrive");
    let deadline = Instant::now() + SPAN_WAIT;
    let (mut count, mut since) = (receiver.span_count(), Instant::now());
    while since.elapsed() < QUIET && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = receiver.span_count();
        if now != count {
            (count, since) = (now, Instant::now());
        }
    }
}

/// A test per exercise, so that each runs (and fails) on its own.
macro_rules! exercises {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[tokio::test]
            async fn $test() {
                check($name).await;
            }
        )*

        #[test]
        fn every_exercise_has_its_test() {
            let names: Vec<String> = exercises::all(&exercises::directory())
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, [$($name),*]);
        }
    };
}

exercises! {
    baseline: "baseline",
    slow_hop: "slow-hop",
    errors: "errors",
    fan_out: "fan-out",
    fan_out_sequential: "fan-out-sequential",
    timeout: "timeout",
    retries: "retries",
    broken_propagation: "broken-propagation",
    sampling: "sampling",
    sampling_independent: "sampling-independent",
    baggage: "baggage",
    tail_sampling: "tail-sampling",
    logs: "logs",
    exemplars: "exemplars",
    tail_sampling_scaled: "tail-sampling-scaled",
    tail_sampling_scaled_by_service: "tail-sampling-scaled-by-service",
    // Its hops on one machine, without the added latency it shows on several.
    network: "network",
}
