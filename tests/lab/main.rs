//! Integration tests: real instances of the binary on port 0, a real OTLP
//! receiver, real HTTP.

mod common;

mod bench;
mod chain;
mod collector;
mod configuration;
mod failures;
mod fan_out;
mod logs;
mod propagation;
mod retries;
mod spans;
mod templates;
