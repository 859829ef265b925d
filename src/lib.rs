//! One hop of a traced microservice chain.
//!
//! A request to `/` waits the configured time ([`delay`]), calls the next
//! hop(s) ([`downstream`]), renders this hop's part ([`templates`]) and
//! answers with the whole chain below it; every step is a span
//! ([`telemetry`]) exported over OTLP. [`contract`] holds what hops and
//! clients say to each other over HTTP; [`state`] what every request shares.

pub mod configuration;
pub mod contract;
pub mod delay;
pub mod downstream;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod templates;

#[cfg(test)]
mod layering;
