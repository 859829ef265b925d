//! What the tests share, the service's (`tests/service/`) and the lab
//! crate's (`lab/tests/`): the binaries under test ([`binary`], [`lab_bin`]),
//! chains of hop processes on free ports ([`three_hops`]), requests and their
//! answers ([`get`], [`requests`]), the spans a receiver got ([`trace_spans`],
//! [`Tree`]) and the lab runner run as a user would ([`runner::Lab`]).
//!
//! It panics on anything unexpected: in a test, that is the assertion.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod runner;
mod spans;
mod web;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub use spans::{Tree, all, one, summary, trace_spans};
pub use web::{Answer, Request, dead_url, get, get_json, request, requests};

use crate::chain::Chain;
use crate::instance::InstanceConfig;
use crate::receiver::{OtlpReceiver, Protocol};

/// How long a test waits for spans to arrive.
pub const SPAN_WAIT: Duration = Duration::from_secs(20);

/// The workspace's root: the checkout.
pub fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `microservice` binary of this build, built first (once per test
/// process) when the tests run under cargo: `cargo test -p lab` does not
/// build the service by itself.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = build_dir();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--bin", "microservice", "--profile"])
                .arg(profile)
                .arg("--manifest-path")
                .arg(workspace().join("Cargo.toml"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the service failed");
        }
        dir.join("microservice")
    })
}

/// The `lab` runner binary of this build (cargo builds it for the lab
/// crate's tests).
pub fn lab_bin() -> PathBuf {
    build_dir().join("lab")
}

/// `target/<profile>`: a test program runs from its `deps/` folder.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test program's path");
    let dir = exe.parent().expect("a folder");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("the profile's folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The checkout's templates.
pub fn templates_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../templates")
}

/// Templates from the checkout and spans to `receiver`.
pub fn common(receiver: &OtlpReceiver) -> InstanceConfig {
    InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        .envs(receiver.env())
}

pub fn hop(service: &str, response_time_ms: u64) -> InstanceConfig {
    InstanceConfig::new()
        .env("OTEL_SERVICE_NAME", service)
        .env("RESPONSE_TIME", response_time_ms.to_string())
}

pub const DELAYS: [u64; 3] = [30, 20, 10];

/// ms-1 → ms-2 → ms-3 with [`DELAYS`].
pub async fn three_hops(receiver: &OtlpReceiver) -> Chain {
    let hops: Vec<_> = DELAYS
        .iter()
        .enumerate()
        .map(|(i, delay)| hop(&format!("ms-{}", i + 1), *delay))
        .collect();
    Chain::start(binary(), &common(receiver), &hops)
        .await
        .expect("the chain starts")
}

/// [`three_hops`] as a chain file would describe it, for what its
/// requests should leave behind ([`crate::trace::expected_spans`]).
pub fn three_hops_topology() -> crate::chain_file::Topology {
    let hops: Vec<serde_json::Value> = DELAYS
        .iter()
        .enumerate()
        .map(|(i, delay)| serde_json::json!({"name": format!("ms-{}", i + 1), "responseTime": delay}))
        .collect();
    let file: crate::chain_file::ChainFile =
        serde_json::from_value(serde_json::json!({ "hops": hops })).unwrap();
    file.check().unwrap()
}

/// Spans of one request for the page through [`three_hops`].
pub fn three_hop_spans() -> usize {
    crate::trace::expected_spans(&three_hops_topology(), crate::trace::Format::Html).total()
}

pub fn grpc_receiver() -> OtlpReceiver {
    OtlpReceiver::start(Protocol::Grpc).expect("the receiver starts")
}

/// A folder of its own under the temporary directory, made empty.
pub fn temp_path(prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A copy of the templates that a test may edit or break.
pub fn tempdir_with_templates() -> PathBuf {
    let dir = temp_path("microservice-templates");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["page.html", "part.html"] {
        std::fs::copy(Path::new(templates_dir()).join(name), dir.join(name)).unwrap();
    }
    dir
}
