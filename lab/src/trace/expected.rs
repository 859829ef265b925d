//! The spans one request through a chain leaves in its trace, derived from
//! the chain: per hop visited, a SERVER span `GET /`; `simulated work` when
//! the hop has a response time or jitter; a CLIENT span `GET` per call it
//! makes; and for the HTML page, `template load` and `template render`. A
//! hop that does not propagate the trace context (`propagation: none`)
//! still makes its CLIENT spans, but its callees start traces of their own.
//!
//! This is the trace of a request every hop samples, where each call takes
//! one attempt: retries add CLIENT spans, and samplers can drop any part.

use crate::chain_file::{Propagation, Topology};

/// What the request asks for: the page, or the JSON report (no templates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
}

pub const SERVER: &str = "GET /";
pub const WORK: &str = "simulated work";
pub const CLIENT: &str = "GET";
pub const TEMPLATE_LOAD: &str = "template load";
pub const TEMPLATE_RENDER: &str = "template render";

/// The spans of one visit of one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSpans {
    /// The hop's index in the chain.
    pub hop: usize,
    /// Its `service.name`.
    pub service: String,
    /// Span names, in the order the hop starts them.
    pub names: Vec<&'static str>,
}

/// The spans of a request's trace, hop by hop, in the order the request
/// visits them (depth first from the entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSpans {
    pub hops: Vec<HopSpans>,
}

impl ExpectedSpans {
    /// How many spans the trace has.
    pub fn total(&self) -> usize {
        self.hops.iter().map(|hop| hop.names.len()).sum()
    }

    /// Every span as (service, name).
    pub fn names(&self) -> Vec<(&str, &'static str)> {
        self.hops
            .iter()
            .flat_map(|hop| hop.names.iter().map(|name| (hop.service.as_str(), *name)))
            .collect()
    }
}

/// The trace one request to `chain`'s entry makes, asking for `format`.
pub fn expected_spans(chain: &Topology, format: Format) -> ExpectedSpans {
    let mut hops = Vec::new();
    // The chain has no cycle (Topology checked it): the walk ends.
    let mut stack = vec![0];
    while let Some(index) = stack.pop() {
        let spec = &chain.hops[index];
        let callees = &chain.calls[index];
        let mut names = vec![SERVER];
        if spec.response_time > 0 || spec.jitter > 0 {
            names.push(WORK);
        }
        names.extend(callees.iter().map(|_| CLIENT));
        if format == Format::Html {
            names.extend([TEMPLATE_LOAD, TEMPLATE_RENDER]);
        }
        hops.push(HopSpans {
            hop: index,
            service: chain.service_name(index),
            names,
        });
        if spec.propagation == Propagation::W3c {
            stack.extend(callees.iter().rev());
        }
    }
    ExpectedSpans { hops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_file::ChainFile;

    fn chain(json: &str) -> Topology {
        ChainFile::parse(json).and_then(ChainFile::check).unwrap()
    }

    /// tests/chains/ states how many spans one page request makes through
    /// each good chain (`htmlSpans`): the count derived here must agree.
    #[test]
    fn the_chain_corpus_span_counts_are_derived() {
        let mut checked = 0;
        for (file, case) in crate::chain_file::tests::corpus() {
            let Some(spans) = case.get("htmlSpans").and_then(|n| n.as_u64()) else {
                continue;
            };
            let total = expected_spans(&chain(&case.to_string()), Format::Html).total();
            assert_eq!(total as u64, spans, "{file}");
            checked += 1;
        }
        assert!(checked >= 3, "{checked} chains with htmlSpans");
    }

    #[test]
    fn the_default_chain_makes_14_spans_for_the_page_and_8_for_json() {
        let chain = Topology::default_chain().unwrap();
        let html = expected_spans(&chain, Format::Html);
        assert_eq!(html.total(), 14);
        assert_eq!(
            html.hops[0].names,
            [SERVER, WORK, CLIENT, TEMPLATE_LOAD, TEMPLATE_RENDER]
        );
        assert_eq!(
            html.hops[2].names,
            [SERVER, WORK, TEMPLATE_LOAD, TEMPLATE_RENDER],
            "the last hop calls nobody"
        );
        let services: Vec<&str> = html.hops.iter().map(|h| h.service.as_str()).collect();
        assert_eq!(
            services,
            ["microservice-1", "microservice-2", "microservice-3"]
        );
        assert_eq!(expected_spans(&chain, Format::Json).total(), 8);
    }

    #[test]
    fn hops_without_work_or_calls_make_only_what_they_do() {
        let chain = chain(r#"{"hops": [{"name": "a"}, {"name": "b", "jitter": 5}]}"#);
        assert_eq!(
            expected_spans(&chain, Format::Json).names(),
            [
                ("microservice-a", SERVER),
                ("microservice-a", CLIENT),
                ("microservice-b", SERVER),
                ("microservice-b", WORK),
            ]
        );
    }

    #[test]
    fn a_fan_out_visits_each_callee_in_call_order() {
        let chain = chain(
            r#"{"hops": [{"name": "a", "calls": ["c", "b"]}, {"name": "b", "calls": []},
                         {"name": "c", "calls": ["b"]}]}"#,
        );
        let spans = expected_spans(&chain, Format::Json);
        let visits: Vec<usize> = spans.hops.iter().map(|h| h.hop).collect();
        assert_eq!(visits, [0, 2, 1, 1], "b is called twice: two visits");
        assert_eq!(spans.total(), 3 + 4);
    }

    #[test]
    fn callees_of_a_hop_that_does_not_propagate_are_not_in_the_trace() {
        let chain = chain(
            r#"{"hops": [{"name": "a"}, {"name": "b", "propagation": "none"}, {"name": "c"}]}"#,
        );
        let spans = expected_spans(&chain, Format::Html);
        let services: Vec<&str> = spans.hops.iter().map(|h| h.service.as_str()).collect();
        assert_eq!(services, ["microservice-a", "microservice-b"]);
        assert_eq!(
            spans.hops[1].names,
            [SERVER, CLIENT, TEMPLATE_LOAD, TEMPLATE_RENDER]
        );
    }
}
