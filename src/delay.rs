//! The simulated work of a hop: RESPONSE_TIME milliseconds ± jitter.

use std::time::Duration;

use tracing::Instrument as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatedWork {
    pub response_time_ms: u64,
    pub jitter_ms: u64,
}

impl SimulatedWork {
    /// This request's delay: uniform in `response_time ± jitter`, never below 0.
    pub fn pick_delay(&self) -> Duration {
        let low = self.response_time_ms.saturating_sub(self.jitter_ms);
        let high = self.response_time_ms.saturating_add(self.jitter_ms);
        Duration::from_millis(fastrand::u64(low..=high))
    }

    /// Waits this request's delay inside a `simulated work` span; no span
    /// when there is nothing to simulate.
    pub async fn run(&self) -> Duration {
        if self.response_time_ms == 0 && self.jitter_ms == 0 {
            return Duration::ZERO;
        }
        let delay = self.pick_delay();
        let span = tracing::info_span!(
            "simulated work",
            lab.response_time_ms = self.response_time_ms,
            lab.response_time_jitter_ms = self.jitter_ms,
            lab.delay_ms = delay.as_millis() as u64,
        );
        tokio::time::sleep(delay).instrument(span).await;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_within_jitter_and_never_goes_negative() {
        let work = SimulatedWork {
            response_time_ms: 5,
            jitter_ms: 10,
        };
        for _ in 0..1000 {
            let delay = work.pick_delay();
            assert!(delay <= Duration::from_millis(15), "{delay:?}");
        }
        let fixed = SimulatedWork {
            response_time_ms: 40,
            jitter_ms: 0,
        };
        assert_eq!(fixed.pick_delay(), Duration::from_millis(40));
    }

    #[test]
    fn jitter_spreads_the_delay() {
        let work = SimulatedWork {
            response_time_ms: 100,
            jitter_ms: 20,
        };
        let delays: std::collections::BTreeSet<_> = (0..200).map(|_| work.pick_delay()).collect();
        assert!(delays.len() > 10, "only {} distinct delays", delays.len());
        assert!(delays.iter().all(|d| (80..=120).contains(&d.as_millis())));
    }
}
