//! The lab's harness: an OTLP receiver, real instances of the service, chains
//! of them, and the benchmark built on those. The service's integration tests
//! use the same pieces.

pub mod bench;
pub mod chain;
pub mod instance;
pub mod load;
pub mod receiver;
pub mod report;
