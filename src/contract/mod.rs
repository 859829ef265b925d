//! The HTTP contract between a hop, the hop that calls it and a client from
//! outside the chain: the headers, the two formats, and the hop report.
//!
//! - A client from outside sends no [`HOPS_HEADER`] and gets the whole page
//!   (or the report); every call to a next hop carries the header, counting
//!   the hops passed, and gets one part.
//! - [`Format`]: the entry hop picks HTML or JSON from `Accept`; every call
//!   down the chain asks for the same format.
//! - Every answer of `/` carries [`PART_HEADER`]; a SERVER span's answer
//!   carries [`TRACE_RESPONSE_HEADER`].
//! - [`HopReport`] is the JSON answer; a caller reads it back into its own.
//! - [`Answer`] is how a caller reads what came back: a part of the chain, a
//!   report, or something foreign, shown as text.

mod answer;
mod format;
mod report;

use http::HeaderValue;
use opentelemetry::trace::SpanContext;

pub use answer::{Answer, FOREIGN_TEXT_LIMIT};
pub use format::Format;
pub use report::{CallReport, HopReport, millis};

/// How many hops a request has passed; absent on a request from outside the chain.
pub const HOPS_HEADER: &str = "x-chain-hops";
/// Marks an answer as a part rendered by a hop of the chain (value: its service name).
pub const PART_HEADER: &str = "x-chain-part";
/// The `User-Agent` of every call to a next hop: the next hop's SERVER span
/// and this hop's CLIENT span show it as `user_agent.original`.
pub const USER_AGENT: &str = concat!("microservice/", env!("CARGO_PKG_VERSION"));
/// W3C Trace Context Level 2: the trace and span id of the SERVER span that answered.
pub const TRACE_RESPONSE_HEADER: &str = "traceresponse";

/// How many hops the request passed: `None` from outside the chain; a
/// value that is not a number counts as 0.
pub fn hops_passed(header: Option<&str>) -> Option<u32> {
    header.map(|value| value.trim().parse::<u32>().unwrap_or(0))
}

/// The [`PART_HEADER`] value naming `service`; a name that cannot be a
/// header value is sent as `microservice`.
pub fn part_header(service: &str) -> HeaderValue {
    HeaderValue::from_str(service).unwrap_or_else(|_| HeaderValue::from_static("microservice"))
}

/// The [`TRACE_RESPONSE_HEADER`] value: `00-<trace id>-<span id>-<flags>`.
pub fn trace_response(context: &SpanContext) -> Option<HeaderValue> {
    if !context.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_passed_counts_only_inside_the_chain() {
        assert_eq!(hops_passed(None), None);
        assert_eq!(hops_passed(Some(" 3 ")), Some(3));
        assert_eq!(hops_passed(Some("many")), Some(0));
    }

    #[test]
    fn a_service_name_that_cannot_be_a_header_value_is_replaced() {
        assert_eq!(part_header("ms-1"), "ms-1");
        assert_eq!(part_header("bad\nname"), "microservice");
    }
}
