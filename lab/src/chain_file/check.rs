//! The checks of a chain, in the order and with the words of the NixOS
//! lab's (nixos/lib/topology.nix): every problem is reported, not only the
//! first. The bounds and the settings that need another come from the
//! schema; tests/chains/ holds the exact messages both sides must give.

use std::collections::HashMap;

use serde_json::Value;

use super::messages::{format, hop_list};
use super::{HopSpec, Topology, schema};

/// Every problem of `hops`, in the NixOS lab's order.
pub(super) fn problems(hops: &[HopSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    if hops.is_empty() {
        problems.push(format("emptyChain", &[]));
    }
    let names: Vec<&str> = hops.iter().map(|h| h.name.as_str()).collect();
    let duplicate_names = duplicates(&names);
    for name in &duplicate_names {
        problems.push(format("duplicateName", &[("hop", name)]));
    }
    let pattern = schema::name_pattern();
    for name in &names {
        if !valid_name(name) {
            problems.push(format("badName", &[("hop", name), ("pattern", &pattern)]));
        }
    }
    let host_pattern = schema::host_pattern();
    for hop in hops {
        if let Some(host) = hop.host.as_deref().filter(|host| !valid_name(host)) {
            problems.push(format(
                "badHost",
                &[
                    ("hop", &hop.name),
                    ("host", host),
                    ("pattern", &host_pattern),
                ],
            ));
        }
    }
    // A port clashes only on one machine; port 0 (any free port) never.
    let ports: Vec<(Option<&str>, u16)> = hops
        .iter()
        .map(|h| (h.host.as_deref(), h.port))
        .filter(|&(_, p)| p != 0)
        .collect();
    for (host, port) in duplicates(&ports) {
        let on_it = hops
            .iter()
            .filter(|h| h.port == port && h.host.as_deref() == host);
        let port = port.to_string();
        let hops = hop_list(on_it.map(|h| h.name.as_str()), ", ");
        problems.push(match host {
            None => format("duplicatePort", &[("port", &port), ("hops", &hops)]),
            Some(host) => format(
                "duplicatePortOnHost",
                &[("port", &port), ("host", host), ("hops", &hops)],
            ),
        });
    }
    let values: Vec<Value> = hops
        .iter()
        .map(|hop| serde_json::to_value(hop).unwrap_or(Value::Null))
        .collect();
    for (hop, values) in hops.iter().zip(&values) {
        problems.extend(out_of_bounds(&hop.name, values));
    }
    for (hop, values) in hops.iter().zip(&values) {
        problems.extend(missing_requirements(&hop.name, values));
    }
    for (index, hop) in hops.iter().enumerate() {
        let calls = super::callee_names(hops, index);
        for callee in calls.iter().filter(|c| !names.contains(c)) {
            problems.push(format(
                "unknownCallee",
                &[("hop", &hop.name), ("callee", callee)],
            ));
        }
        if calls.contains(&hop.name.as_str()) {
            problems.push(format("callsItself", &[("hop", &hop.name)]));
        }
    }
    if duplicate_names.is_empty() {
        if let Some(cycle) = first_cycle(hops) {
            let cycle = hop_list(cycle.iter().map(|&h| hops[h].name.as_str()), " → ");
            problems.push(format("cycle", &[("cycle", &cycle)]));
        }
    }
    problems
}

/// As the schema's `pattern` for `name` says: `^[A-Za-z0-9_-]+$`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Each value that occurs more than once, once, in the order it first occurs.
fn duplicates<T: PartialEq + Copy>(values: &[T]) -> Vec<T> {
    let mut found = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if values[index + 1..].contains(value) && !found.contains(value) {
            found.push(*value);
        }
    }
    found
}

/// Settings outside the schema's `minimum`/`maximum`.
fn out_of_bounds(hop: &str, values: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (setting, property) in schema::hop_properties() {
        let Some(value) = values.get(setting).and_then(Value::as_f64) else {
            continue;
        };
        let minimum = property.get("minimum").and_then(Value::as_f64);
        let maximum = property.get("maximum").and_then(Value::as_f64);
        if minimum.is_some_and(|m| value < m) || maximum.is_some_and(|m| value > m) {
            let shown = schema::value_text(&values[setting]).unwrap_or_default();
            let bound = |key: &str| property.get(key).and_then(schema::value_text);
            let (key, minimum, maximum) = match (bound("minimum"), bound("maximum")) {
                (Some(min), Some(max)) => ("outOfRange", min, max),
                (Some(min), None) => ("belowMinimum", min, String::new()),
                (None, max) => ("aboveMaximum", String::new(), max.unwrap_or_default()),
            };
            problems.push(format(
                key,
                &[
                    ("hop", hop),
                    ("setting", setting),
                    ("value", &shown),
                    ("minimum", &minimum),
                    ("maximum", &maximum),
                ],
            ));
        }
    }
    problems
}

/// Settings whose value needs another setting (the schema's `x-requires`)
/// that is not there.
fn missing_requirements(hop: &str, values: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (setting, property) in schema::hop_properties() {
        let Some(requires) = property.get("x-requires").and_then(Value::as_object) else {
            continue;
        };
        let value = &values[setting];
        for (required, when) in requires {
            let needed = when.as_array().is_some_and(|when| when.contains(value));
            if needed && values[required].is_null() {
                let shown = schema::value_text(value).unwrap_or_default();
                problems.push(format(
                    "needsSetting",
                    &[
                        ("hop", hop),
                        ("setting", setting),
                        ("value", &shown),
                        ("required", required),
                    ],
                ));
            }
        }
    }
    problems
}

/// The first cycle of calls, by hop index (its first hop last again):
/// depth-first from each hop in order, following known callees other than
/// the hop itself (those have their own messages).
fn first_cycle(hops: &[HopSpec]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = hops
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let callees: Vec<Vec<usize>> = (0..hops.len())
        .map(|hop| {
            super::callee_names(hops, hop)
                .into_iter()
                .filter_map(|name| index.get(name).copied())
                .filter(|&callee| callee != hop)
                .collect()
        })
        .collect();
    fn from(
        path: &mut Vec<usize>,
        callees: &[Vec<usize>],
        done: &mut [bool],
    ) -> Option<Vec<usize>> {
        let current = *path.last()?;
        // As the NixOS lab looks: a callee already on the path first.
        let closing = callees[current].iter().find(|c| path.contains(c));
        if let Some(&callee) = closing {
            let at = path.iter().position(|&h| h == callee).unwrap_or(0);
            let mut cycle = path[at..].to_vec();
            cycle.push(callee);
            return Some(cycle);
        }
        for &callee in &callees[current] {
            if done[callee] {
                continue;
            }
            path.push(callee);
            let found = from(path, callees, done);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        // Nothing below this hop closes a circle.
        done[current] = true;
        None
    }
    let mut done = vec![false; hops.len()];
    (0..hops.len()).find_map(|hop| from(&mut vec![hop], &callees, &mut done))
}

/// Every hop after the hops it calls (depth-first, post-order), for a chain
/// without cycles.
pub(super) fn callees_first(calls: &[Vec<usize>]) -> Vec<usize> {
    fn visit(hop: usize, calls: &[Vec<usize>], seen: &mut [bool], order: &mut Vec<usize>) {
        if seen[hop] {
            return;
        }
        seen[hop] = true;
        for &callee in &calls[hop] {
            visit(callee, calls, seen, order);
        }
        order.push(hop);
    }
    let mut seen = vec![false; calls.len()];
    let mut order = Vec::with_capacity(calls.len());
    for hop in 0..calls.len() {
        visit(hop, calls, &mut seen, &mut order);
    }
    order
}

impl Topology {
    /// `hops` wired by index, once [`problems`] found nothing.
    pub(super) fn wire(hops: Vec<HopSpec>) -> Self {
        let index: HashMap<&str, usize> = hops
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        let calls: Vec<Vec<usize>> = (0..hops.len())
            .map(|hop| {
                super::callee_names(&hops, hop)
                    .into_iter()
                    .filter_map(|name| index.get(name).copied())
                    .collect()
            })
            .collect();
        let start_order = callees_first(&calls);
        Topology {
            hops,
            calls,
            start_order,
        }
    }
}
