//! The service's integration tests: real instances of the binary on port 0,
//! a real OTLP receiver, real HTTP. What they share is `lab::testing`.

// Tests fail loudly: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

mod bench;
mod chain;
mod collector;
mod configuration;
mod failures;
mod fan_out;
mod logs;
mod propagation;
mod retries;
mod signals;
mod spans;
mod templates;
