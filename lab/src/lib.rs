//! The lab around the service: real instances of the `microservice` binary
//! ([`instance`], [`chain`]) started from a chain file ([`chain_file`]) or an
//! exercise ([`exercises`]), an OTLP receiver that keeps what they export
//! ([`receiver`]), a load generator ([`load`]), the trace model that judges
//! what arrives ([`trace`]), and what is built from them: the runner that
//! draws traces in the terminal ([`runner`]) and the benchmark ([`bench`](mod@bench)).
//! Every Rust test shares [`testing`].

pub mod bench;
pub mod chain;
pub mod chain_file;
pub mod exercises;
pub mod generated_docs;
pub mod instance;
pub mod load;
pub mod receiver;
pub mod runner;
pub mod service_binary;
pub mod testing;
pub mod trace;
