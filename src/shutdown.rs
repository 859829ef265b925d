//! Stopping: on SIGTERM or Ctrl-C the server stops accepting, lets requests
//! in flight finish, then the remaining spans are flushed. Both waits are
//! bounded so that a hung collector cannot hold the process (≈ 4.5 s at most).

use std::time::Duration;

/// How long requests in flight may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the last spans may take to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Starts listening for SIGTERM and Ctrl-C (SIGINT) at once, so that a
/// signal arriving before the returned future is first polled still stops
/// the service gracefully instead of killing it; the future resolves on the
/// first of them.
pub fn listen() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for {name}"))
                .ok()
        };
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        let interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
        async fn next(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        async move {
            tokio::select! {
                () = next(interrupt) => tracing::info!("Ctrl-C: shutting down"),
                () = next(terminate) => tracing::info!("SIGTERM: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C: shutting down"),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await
            }
        }
    }
}
