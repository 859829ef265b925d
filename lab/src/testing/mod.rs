//! What the tests share, the service's (`tests/service/`) and the lab
//! crate's (`lab/tests/`): the binaries under test ([`binary`], [`lab_bin`]),
//! chains of hop processes on free ports ([`three_hops`]), requests and their
//! answers ([`get`], [`requests`]), the spans a receiver got ([`trace_spans`],
//! [`Tree`]) and the lab runner run as a user would ([`runner::Lab`]).
//!
//! It panics on anything unexpected: in a test, that is the assertion.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod binaries;
mod hops;
pub mod runner;
mod spans;
mod web;

pub use binaries::{binary, lab_bin, temp_path, tempdir_with_templates, templates_dir, workspace};
pub use hops::{
    DELAYS, common, grpc_receiver, hop, three_hop_spans, three_hops, three_hops_topology,
};
pub use spans::{SPAN_WAIT, Tree, all, one, summary, trace_spans};
pub use web::{Answer, Request, dead_url, get, get_json, request, requests};
