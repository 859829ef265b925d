//! Span attributes in the waterfall (`--attributes`, and an exercise's
//! default): what the learner picked is printed on a line under each span
//! that has some of it, e.g.
//!
//! ```text
//!  253.7 ms   ████████████   │  └─ microservice-2 GET /
//!                            │     │ lab.customer=alice
//! ```
//!
//! A selection is a list of items, each one of:
//! - an attribute key, `error.type`;
//! - a prefix, `http.*` (`*` alone: every attribute);
//! - `baggage`: the entries the chain's hops put into the W3C baggage
//!   (each hop records what it received under the entry's own key);
//! - `sampler`: on each hop's SERVER span, the hop's head sampler and how it
//!   decided (on its own, or following its caller). The SDK records no
//!   attribute for this; it is derived from the chain and the span's parent.

use std::collections::BTreeSet;

use crate::chain_file::{Sampler, Topology};
use crate::receiver::{ReceivedSpan, SpanKind};

/// The word for "show no attributes", which also overrides an exercise's.
pub const NONE: &str = "none";
/// The derived items' names.
pub const BAGGAGE: &str = "baggage";
pub const SAMPLER: &str = "sampler";

/// One item of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Key(String),
    /// A key prefix, without its `*` (empty: every key).
    Prefix(String),
    Baggage,
    Sampler,
}

impl Item {
    /// One item as written on the command line or in an exercise file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty item (two commas in a row?)".to_string());
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("`{text}`: an attribute key has no spaces"));
        }
        Ok(match text {
            BAGGAGE => Item::Baggage,
            SAMPLER => Item::Sampler,
            _ => match text.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Item::Prefix(prefix.to_string()),
                Some(_) => {
                    return Err(format!("`{text}`: `*` may only end a key, as in `http.*`"));
                }
                None if text.contains('*') => {
                    return Err(format!("`{text}`: `*` may only end a key, as in `http.*`"));
                }
                None => Item::Key(text.to_string()),
            },
        })
    }
}

/// What `--attributes` selected: items in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection(pub Vec<Item>);

impl Selection {
    /// `error.type,http.*,baggage`; `none` selects nothing.
    pub fn parse(list: &str) -> Result<Self, String> {
        match list.trim() {
            NONE => return Ok(Self::default()),
            "" => {
                return Err(format!(
                    "no items: name keys such as error.type, or `{NONE}`"
                ));
            }
            _ => {}
        }
        list.split(',')
            .map(Item::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The items of an exercise file's list.
    pub fn from_items(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|item| Item::parse(item))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The help text's description of a selection, one source for `--help` and
/// the docs' wording.
pub const HELP: &str = "Print these span attributes under each span, comma-separated: \
keys (error.type), prefixes (http.*; * alone: all), `baggage` (the entries the hops put \
into the W3C baggage), `sampler` (each hop's head sampler and how it decided, on its \
SERVER span); `none` for nothing. Default: the exercise's choice, else none.";

/// A selection made concrete for one chain: ready to describe spans.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    selection: Selection,
    /// Keys of the baggage entries the chain's hops add.
    baggage_keys: BTreeSet<String>,
    /// Per service name, its hop's sampler (`None`: the SDK's default) and
    /// ratio.
    samplers: Vec<(String, Option<Sampler>, Option<f64>)>,
}

impl Attributes {
    pub fn new(selection: Selection, chain: &Topology) -> Self {
        let baggage_keys = chain
            .hops
            .iter()
            .filter_map(|hop| hop.baggage.as_deref())
            .flat_map(baggage_keys)
            .collect();
        let samplers = chain
            .hops
            .iter()
            .enumerate()
            .map(|(index, hop)| (chain.service_name(index), hop.sampler, hop.sampler_arg))
            .collect();
        Self {
            selection,
            baggage_keys,
            samplers,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.selection.is_empty()
    }

    /// The banner's words on what is shown, when anything is.
    pub fn describe(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let items: Vec<String> = self
            .selection
            .0
            .iter()
            .map(|item| match item {
                Item::Key(key) => key.clone(),
                Item::Prefix(prefix) => format!("{prefix}*"),
                Item::Baggage if self.baggage_keys.is_empty() => {
                    "baggage (no hop adds any)".to_string()
                }
                Item::Baggage => format!(
                    "baggage ({})",
                    self.baggage_keys
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Item::Sampler => "sampler (on SERVER spans)".to_string(),
            })
            .collect();
        Some(format!(
            "Printed under the spans (--attributes): {}.",
            items.join(", ")
        ))
    }

    /// The selected `key=value` pairs of `span`, in the selection's order,
    /// each key once; empty when it has none of them.
    pub fn pairs(&self, span: &ReceivedSpan) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut push = |key: &str, value: String| {
            if !pairs.iter().any(|(k, _)| k == key) {
                pairs.push((key.to_string(), value));
            }
        };
        for item in &self.selection.0 {
            match item {
                Item::Key(key) => {
                    if let Some(value) = span.attr(key) {
                        push(key, value);
                    }
                }
                Item::Prefix(prefix) => {
                    for kv in &span.span.attributes {
                        if kv.key.starts_with(prefix.as_str()) {
                            if let Some(value) = span.attr(&kv.key) {
                                push(&kv.key, value);
                            }
                        }
                    }
                }
                Item::Baggage => {
                    for key in &self.baggage_keys {
                        if let Some(value) = span.attr(key) {
                            push(key, value);
                        }
                    }
                }
                Item::Sampler => {
                    if let Some(decision) = self.sampler_decision(span) {
                        push(SAMPLER, decision);
                    }
                }
            }
        }
        pairs
    }

    /// The text of the line under `span`, if it has any selected attribute.
    pub fn text(&self, span: &ReceivedSpan) -> Option<String> {
        let pairs = self.pairs(span);
        if pairs.is_empty() {
            return None;
        }
        let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(parts.join("  "))
    }

    /// How the hop of a SERVER span came to record it: every exported span
    /// was sampled; what differs is who decided.
    fn sampler_decision(&self, span: &ReceivedSpan) -> Option<String> {
        if span.kind() != SpanKind::Server {
            return None;
        }
        let (_, sampler, ratio) = self.samplers.iter().find(|(s, _, _)| *s == span.service)?;
        let name = match sampler {
            Some(sampler) => serde_json::to_value(sampler)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            None => "parentbased_always_on".to_string(),
        };
        let name = match ratio.filter(|_| sampler.is_some_and(Sampler::needs_ratio)) {
            Some(ratio) => format!("{name}({ratio})"),
            None => name,
        };
        let follows_parent = !matches!(
            sampler,
            Some(Sampler::AlwaysOn | Sampler::AlwaysOff | Sampler::Traceidratio)
        );
        let has_caller = !span.parent_id().is_empty();
        let how = match (has_caller, follows_parent) {
            (false, _) => "decided here, kept",
            (true, true) => "followed its caller's decision, kept",
            (true, false) => "decided here whatever its caller did, kept",
        };
        Some(format!("{name}: {how}"))
    }
}

/// The keys of a W3C baggage value, `k=v;prop,k2=v2`.
fn baggage_keys(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|entry| entry.split_once('=').map(|(key, _)| key.trim().to_string()))
        .filter(|key| !key.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_file::ChainFile;
    use crate::trace::fixtures::span;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

    fn chain() -> Topology {
        ChainFile::parse(
            r#"{"hops": [
                {"name": "a", "baggage": "lab.customer=alice,lab.plan=gold;p=1",
                 "sampler": "parentbased_traceidratio", "samplerArg": 0.25},
                {"name": "b", "sampler": "traceidratio", "samplerArg": 0.5},
                {"name": "c"}]}"#,
        )
        .and_then(ChainFile::check)
        .unwrap()
    }

    fn with(mut span: ReceivedSpan, attributes: &[(&str, any_value::Value)]) -> ReceivedSpan {
        for (key, value) in attributes {
            span.span.attributes.push(KeyValue {
                key: key.to_string(),
                value: Some(AnyValue {
                    value: Some(value.clone()),
                }),
                ..KeyValue::default()
            });
        }
        span
    }

    fn server(service: &str, id: u8, parent: Option<u8>) -> ReceivedSpan {
        let mut span = span(service, "GET /", id, parent, 0, 10);
        span.span.kind = SpanKind::Server as i32;
        span
    }

    fn text(list: &str, span: &ReceivedSpan) -> Option<String> {
        Attributes::new(Selection::parse(list).unwrap(), &chain()).text(span)
    }

    #[test]
    fn keys_prefixes_and_baggage_are_picked_in_the_order_given() {
        use any_value::Value::{IntValue, StringValue};
        let span = with(
            server("microservice-b", 2, Some(1)),
            &[
                ("http.response.status_code", IntValue(502)),
                ("error.type", StringValue("downstream_failed".into())),
                ("lab.customer", StringValue("alice".into())),
                ("http.route", StringValue("/".into())),
                ("lab.plan", StringValue("gold".into())),
            ],
        );
        assert_eq!(
            text("error.type,http.*,baggage", &span).as_deref(),
            Some(
                "error.type=downstream_failed  http.response.status_code=502  http.route=/  \
                 lab.customer=alice  lab.plan=gold"
            )
        );
        // A key named twice is shown once; an absent one not at all.
        assert_eq!(
            text("lab.customer,baggage,nope", &span).as_deref(),
            Some("lab.customer=alice  lab.plan=gold")
        );
        assert_eq!(text("nope", &span), None);
        assert_eq!(text("none", &span), None);
    }

    #[test]
    fn the_sampler_says_who_decided() {
        assert_eq!(
            text("sampler", &server("microservice-a", 1, None)).as_deref(),
            Some("sampler=parentbased_traceidratio(0.25): decided here, kept")
        );
        assert_eq!(
            text("sampler", &server("microservice-b", 2, Some(1))).as_deref(),
            Some("sampler=traceidratio(0.5): decided here whatever its caller did, kept")
        );
        assert_eq!(
            text("sampler", &server("microservice-c", 3, Some(2))).as_deref(),
            Some("sampler=parentbased_always_on: followed its caller's decision, kept")
        );
        // Only a hop's SERVER span: the rest of its spans follow it.
        let work = span("microservice-c", "simulated work", 4, Some(3), 0, 1);
        assert_eq!(text("sampler", &work), None);
    }

    #[test]
    fn bad_items_are_named() {
        for (list, message) in [
            ("error.type,,http.*", "an empty item"),
            ("", "no items: name keys such as error.type, or `none`"),
            ("http.*.x", "`http.*.x`: `*` may only end a key"),
            ("*.type", "`*.type`: `*` may only end a key"),
            ("error type", "`error type`: an attribute key has no spaces"),
        ] {
            let error = Selection::parse(list).unwrap_err();
            assert!(error.contains(message), "{list}: {error}");
        }
        assert_eq!(
            Selection::parse(" error.type , * ").unwrap(),
            Selection(vec![
                Item::Key("error.type".into()),
                Item::Prefix(String::new())
            ])
        );
    }

    #[test]
    fn the_waterfall_prints_them_under_their_span_on_its_stem() {
        use crate::runner::waterfall::{Style, render_with, tree_of};
        use crate::trace::Trace;
        let mut spans = crate::trace::fixtures::spans();
        for span in &mut spans {
            *span = with(
                span.clone(),
                &[(
                    "lab.name",
                    any_value::Value::StringValue(span.name().into()),
                )],
            );
        }
        let trace = Trace {
            id: "07".repeat(16),
            spans,
            late: None,
        };
        let attributes = Attributes::new(Selection::parse("lab.name").unwrap(), &chain());
        let text = render_with(&trace, None, Style::Plain, &attributes, &[]);
        let trees: Vec<&str> = text.lines().skip(1).filter_map(tree_of).collect();
        assert_eq!(
            trees,
            [
                "a GET /",
                "│ lab.name=GET /",
                "├─ a simulated work",
                "│    lab.name=simulated work",
                "└─ a GET",
                "   │ lab.name=GET",
                "   └─ b GET /  ERROR injected failure",
                "        lab.name=GET /",
            ],
            "{text}"
        );
        // An attribute line has no bar, so readers of span lines skip it.
        assert!(
            text.lines()
                .filter(|l| l.contains("lab.name="))
                .all(|l| { crate::runner::waterfall::bar_of(l).is_none() })
        );
    }

    #[test]
    fn the_banner_names_the_baggage_keys() {
        let attributes = Attributes::new(Selection::parse("baggage,sampler").unwrap(), &chain());
        assert_eq!(
            attributes.describe().as_deref(),
            Some(
                "Printed under the spans (--attributes): baggage (lab.customer, lab.plan), \
                 sampler (on SERVER spans)."
            )
        );
        assert_eq!(Attributes::default().describe(), None);
    }
}
