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
        // Signed: tracing-opentelemetry records unsigned values as text.
        let span = tracing::info_span!(
            "simulated work",
            lab.response_time_ms = self.response_time_ms as i64,
            lab.response_time_jitter_ms = self.jitter_ms as i64,
            lab.delay_ms = delay.as_millis() as i64,
        );
        precise_sleep(delay).instrument(span).await;
        delay
    }
}

/// Sleeps `duration` without tokio's millisecond rounding, which adds up to
/// a millisecond per hop and so blurs the waterfall of a long chain.
pub async fn precise_sleep(duration: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(error) = timerfd::sleep(duration).await {
        tracing::debug!(%error, "timerfd unavailable; sleeping with tokio's timer");
        tokio::time::sleep(duration).await;
    }
    #[cfg(not(target_os = "linux"))]
    tokio::time::sleep(duration).await;
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::{AsFd as _, AsRawFd, RawFd};
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    struct Timer(TimerFd);

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    /// A one-shot CLOCK_MONOTONIC timerfd, awaited on tokio's reactor.
    pub async fn sleep(duration: Duration) -> std::io::Result<()> {
        if duration.is_zero() {
            // A zero expiration would disarm the timer, never fire it.
            return Ok(());
        }
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?;
        timer.set(
            Expiration::OneShot(TimeSpec::from_duration(duration)),
            TimerSetTimeFlags::empty(),
        )?;
        // SAFETY: `Timer` owns the timerfd and hands out the same descriptor
        // until it is dropped, which happens only with the AsyncFd.
        let timer = unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .map_err(|error| error.into_parts().1)?;
        loop {
            let mut ready = timer.readable().await?;
            // Non-blocking read of the expiration count: WouldBlock until it fired.
            match ready.try_io(|timer| timer.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
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

    #[tokio::test]
    async fn precise_sleep_lasts_at_least_its_duration() {
        for millis in [0, 1, 7, 30] {
            let wanted = Duration::from_millis(millis);
            let started = std::time::Instant::now();
            precise_sleep(wanted).await;
            assert!(started.elapsed() >= wanted, "{millis} ms");
        }
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
