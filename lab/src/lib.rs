//! The lab around the service: real instances of the `microservice` binary
//! ([`instance`], [`chain`]), an OTLP receiver that keeps what they export
//! ([`receiver`]), a load generator ([`load`]), and what is built from them:
//! the benchmark ([`bench`]). The service's integration tests use the same
//! pieces.

pub mod bench;
pub mod chain;
pub mod chain_file;
pub mod exercises;
pub mod instance;
pub mod load;
pub mod receiver;
pub mod runner;
pub mod service_binary;
