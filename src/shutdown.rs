//! Stopping: on SIGTERM or Ctrl-C the server stops accepting, lets requests
//! in flight finish, then the remaining spans are flushed. Both waits are
//! bounded so that a hung collector cannot hold the process (≈ 4.5 s at most).

use std::time::Duration;

/// How long requests in flight may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the last spans may take to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
