//! The load generator: a fixed number of keep-alive connections, each
//! sending one request after the other, for a fixed time, optionally paced
//! to a total request rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one request saw.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, from the start of the run.
    pub sent: Duration,
    pub latency: Duration,
    /// HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// From the `traceresponse` header.
    pub trace_id: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The trace id as a number, as the receiver's stubs have it.
    pub fn trace_number(&self) -> Option<u128> {
        u128::from_str_radix(self.trace_id.as_deref()?, 16).ok()
    }
}

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub connections: usize,
    pub duration: Duration,
    /// Total requests per second over all connections; `None` = as fast as
    /// the chain answers.
    pub rate: Option<f64>,
    pub timeout: Duration,
    /// `Accept: application/json` (the chain's JSON answer) instead of HTML.
    pub json: bool,
}

/// Runs `load` and gives every sample, in no particular order.
pub async fn run(load: &Load) -> Vec<Sample> {
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..load.connections.max(1) {
        let load = load.clone();
        workers.spawn(async move { connection(load, worker, started, deadline).await });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(mut worker_samples) = done {
            samples.append(&mut worker_samples);
        }
    }
    samples
}

async fn connection(load: Load, worker: usize, started: Instant, deadline: Instant) -> Vec<Sample> {
    // One client per worker: exactly one keep-alive connection each.
    let client = match reqwest::Client::builder()
        .timeout(load.timeout)
        .pool_max_idle_per_host(1)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(_) => return Vec::new(),
    };
    let mut pacing = load.rate.map(|rate| {
        let period = Duration::from_secs_f64(load.connections.max(1) as f64 / rate.max(0.001));
        // Spread the workers' first requests over one period.
        let offset = period.mul_f64(worker as f64 / load.connections.max(1) as f64);
        let mut interval = tokio::time::interval_at((started + offset).into(), period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut samples = Vec::new();
    loop {
        if let Some(interval) = pacing.as_mut() {
            interval.tick().await;
        }
        let sent_at = Instant::now();
        if sent_at >= deadline {
            break;
        }
        let mut request = client.get(&load.url);
        if load.json {
            request = request.header("accept", "application/json");
        }
        let answer = request.send().await;
        let (status, trace_id) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let trace_id = trace_id(response.headers());
                // The whole body is part of the request's time.
                let complete = response.bytes().await.is_ok();
                (complete.then_some(status), trace_id)
            }
            Err(_) => (None, None),
        };
        samples.push(Sample {
            sent: sent_at - started,
            latency: sent_at.elapsed(),
            status,
            trace_id,
        });
    }
    samples
}

fn trace_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get("traceresponse")?.to_str().ok()?;
    value.split('-').nth(1).map(str::to_string)
}

/// What a [`trickle`] has done so far.
#[derive(Debug, Default)]
pub struct TrickleCounts {
    pub sent: AtomicU64,
    /// Answered, but not 2xx.
    pub failed: AtomicU64,
    /// No answer at all.
    pub unanswered: AtomicU64,
}

/// Most requests a trickle has in flight: beyond that, ticks are skipped
/// rather than piling up on a stuck chain.
const TRICKLE_IN_FLIGHT: usize = 64;

/// Sends `rate` requests per second to `url`, each on its own, until the
/// future is dropped: a steady background load that keeps the lab's
/// dashboards fed. `user_agent` tells its traces apart.
pub async fn trickle(url: String, rate: f64, user_agent: &str, counts: Arc<TrickleCounts>) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(user_agent)
        .no_proxy()
        .build()
    else {
        return;
    };
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(TRICKLE_IN_FLIGHT));
    let mut requests = tokio::task::JoinSet::new();
    loop {
        ticks.tick().await;
        while requests.try_join_next().is_some() {}
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let (client, url, counts) = (client.clone(), url.clone(), counts.clone());
        requests.spawn(async move {
            counts.sent.fetch_add(1, Ordering::Relaxed);
            match client.get(&url).send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let complete = response.bytes().await.is_ok();
                    if !ok || !complete {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counts.unanswered.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
}

/// Throughput and latency of a set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub non_2xx: usize,
    /// Requests that got no answer at all.
    pub errors: usize,
}

impl Summary {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, over: Duration) -> Self {
        let samples: Vec<&Sample> = samples.into_iter().collect();
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
            millis(latencies[rank.clamp(1, latencies.len()) - 1])
        };
        Summary {
            requests: samples.len(),
            requests_per_second: samples.len() as f64 / over.as_secs_f64().max(f64::EPSILON),
            p50_ms: percentile(50.0),
            p90_ms: percentile(90.0),
            p95_ms: percentile(95.0),
            p99_ms: percentile(99.0),
            max_ms: latencies.last().copied().map_or(0.0, millis),
            non_2xx: samples
                .iter()
                .filter(|s| s.status.is_some() && !s.ok())
                .count(),
            errors: samples.iter().filter(|s| s.status.is_none()).count(),
        }
    }
}

pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, status: Option<u16>) -> Sample {
        Sample {
            sent: Duration::ZERO,
            latency: Duration::from_millis(ms),
            status,
            trace_id: None,
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<_> = (1..=100).map(|ms| sample(ms, Some(200))).collect();
        let summary = Summary::of(&samples, Duration::from_secs(2));
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.requests_per_second, 50.0);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p90_ms, 90.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
    }

    #[test]
    fn failures_are_counted_apart() {
        let samples = [sample(1, Some(200)), sample(1, Some(502)), sample(1, None)];
        let summary = Summary::of(&samples, Duration::from_secs(1));
        assert_eq!(summary.non_2xx, 1);
        assert_eq!(summary.errors, 1);
    }
}
