//! The trace model: spans as the hops export them, assembled into traces
//! ([`assembly`]), what a request through a chain should leave behind
//! ([`expected`]), and the collector's tail-sampling decisions on a
//! finished trace ([`tail_sampling`]), also on recorded traffic
//! ([`replay`]). The runner draws what this module
//! assembles; the exercises and the benchmark judge by it.

pub mod assembly;
pub mod expected;
pub mod replay;
pub mod tail_sampling;

pub use assembly::{Assembler, Late, Trace, Verdict};
pub use expected::{ExpectedSpans, Format, HopSpans, expected_spans};

#[cfg(test)]
pub(crate) mod fixtures;
