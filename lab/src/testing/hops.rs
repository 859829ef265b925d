//! Hop processes on free ports, exporting to a receiver of the test's own.

use super::binaries::{binary, templates_dir};
use crate::chain::Chain;
use crate::chain_file::{ChainFile, Topology};
use crate::instance::InstanceConfig;
use crate::receiver::{OtlpReceiver, Protocol};
use crate::trace::{Format, expected_spans};

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
/// requests should leave behind ([`expected_spans`]).
pub fn three_hops_topology() -> Topology {
    let hops: Vec<serde_json::Value> = DELAYS
        .iter()
        .enumerate()
        .map(|(i, delay)| serde_json::json!({"name": format!("ms-{}", i + 1), "responseTime": delay}))
        .collect();
    let file: ChainFile = serde_json::from_value(serde_json::json!({ "hops": hops })).unwrap();
    file.check().unwrap()
}

/// Spans of one request for the page through [`three_hops`].
pub fn three_hop_spans() -> usize {
    expected_spans(&three_hops_topology(), Format::Html).total()
}

pub fn grpc_receiver() -> OtlpReceiver {
    OtlpReceiver::start(Protocol::Grpc).expect("the receiver starts")
}
