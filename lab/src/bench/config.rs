//! What a benchmark run measures, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use crate::receiver::Protocol;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The release binary of the service.
    pub binary: PathBuf,
    /// TEMPLATES_DIR for the instances; `None` = the binary's default.
    pub templates_dir: Option<PathBuf>,
    /// How the instances export: the lab's collector takes OTLP/HTTP.
    pub protocol: Protocol,
    pub hops: usize,
    pub connections: usize,
    /// Measured time per setting of mode 1, split over `rounds` turns.
    pub duration: Duration,
    pub rounds: usize,
    pub warmup: Duration,
    /// Length of each phase of the collector-fault and shutdown modes.
    pub phase: Duration,
    /// Requests of the delay-fidelity mode, and their rate.
    pub delay_requests: usize,
    pub delay_rate: f64,
    /// Extra environment for every instance, after the bench's own (so it
    /// can override the batching, say): for trying exporter settings.
    pub hop_env: Vec<(String, String)>,
}

impl BenchConfig {
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            templates_dir: None,
            protocol: Protocol::HttpProtobuf,
            hops: 3,
            connections: 16,
            duration: Duration::from_secs(10),
            rounds: 5,
            warmup: Duration::from_secs(2),
            phase: Duration::from_secs(3),
            delay_requests: 400,
            delay_rate: 10.0,
            hop_env: Vec::new(),
        }
    }

    /// A run of a few seconds that exercises every mode (for `cargo test`).
    pub fn smoke(binary: PathBuf) -> Self {
        Self {
            hops: 2,
            connections: 2,
            duration: Duration::from_millis(400),
            rounds: 2,
            warmup: Duration::from_millis(100),
            phase: Duration::from_millis(300),
            delay_requests: 4,
            delay_rate: 20.0,
            ..Self::new(binary)
        }
    }
}
