//! A chain of hops described in JSON, in the shape of the NixOS lab's
//! `services.tracing-lab.chain` option: the same file runs here and in the
//! VM, and the VM's own `/etc/tracing-lab/lab.json` runs here too.
//!
//! ```json
//! { "hops": [
//!   { "name": "gateway", "port": 8080, "responseTime": 20,
//!     "calls": ["catalog", "pricing"], "callMode": "parallel" },
//!   { "name": "catalog", "port": 8081, "responseTime": 80, "calls": [] },
//!   { "name": "pricing", "port": 8082, "errorRate": 0.05 },
//!   { "name": "stock", "port": 8083, "responseTime": 60, "jitter": 20 } ] }
//! ```
//!
//! A hop without `calls` calls the next one in the list (the last calls
//! nobody); `"calls": []` makes it a leaf.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The lab's default chain: the baseline exercise's.
pub const DEFAULT_CHAIN: &str = include_str!("../../exercises/baseline.json");

/// The file as written. Other top-level keys (an exercise's text, lab.json's
/// ports) are not the chain's business and are left alone.
#[derive(Debug, Clone, Deserialize)]
pub struct ChainFile {
    pub hops: Vec<HopSpec>,
}

/// One hop, with the option names of the NixOS lab's chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HopSpec {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    /// 0: any free port (here only; the NixOS lab needs real ones).
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub response_time: u64,
    #[serde(default)]
    pub jitter: u64,
    #[serde(default)]
    pub error_rate: f64,
    /// Hop names; absent: the next hop in the list.
    #[serde(default)]
    pub calls: Option<Vec<String>>,
    #[serde(default)]
    pub call_mode: CallMode,
    /// EXTERNAL_CALL_TIMEOUT, ms.
    #[serde(default)]
    pub call_timeout: Option<u64>,
    /// EXTERNAL_CALL_RETRIES.
    #[serde(default)]
    pub call_retries: u32,
    #[serde(default)]
    pub propagation: Propagation,
    /// BAGGAGE: `key=value,...` this hop adds.
    #[serde(default)]
    pub baggage: Option<String>,
    /// OTEL_TRACES_SAMPLER and its ratio.
    #[serde(default)]
    pub sampler: Option<Sampler>,
    #[serde(default)]
    pub sampler_arg: Option<f64>,

    // What lab.json adds to each hop: where it ran in the VM.
    #[serde(default, rename = "entry")]
    _entry: Option<IgnoredAny>,
    #[serde(default, rename = "serviceName")]
    _service_name: Option<IgnoredAny>,
    #[serde(default, rename = "unit")]
    _unit: Option<IgnoredAny>,
    #[serde(default, rename = "url")]
    _url: Option<IgnoredAny>,
    #[serde(default, rename = "calledServices")]
    _called_services: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CallMode {
    #[default]
    Sequential,
    Parallel,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    #[default]
    W3c,
    None,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl Sampler {
    fn as_str(self) -> &'static str {
        match self {
            Sampler::AlwaysOn => "always_on",
            Sampler::AlwaysOff => "always_off",
            Sampler::Traceidratio => "traceidratio",
            Sampler::ParentbasedAlwaysOn => "parentbased_always_on",
            Sampler::ParentbasedAlwaysOff => "parentbased_always_off",
            Sampler::ParentbasedTraceidratio => "parentbased_traceidratio",
        }
    }

    fn needs_ratio(self) -> bool {
        matches!(
            self,
            Sampler::Traceidratio | Sampler::ParentbasedTraceidratio
        )
    }
}

/// A chain that passed every check: who calls whom by index, and an order
/// in which every hop starts after the hops it calls.
#[derive(Debug, Clone)]
pub struct Topology {
    pub hops: Vec<HopSpec>,
    pub calls: Vec<Vec<usize>>,
    pub start_order: Vec<usize>,
}

impl ChainFile {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads and checks `path`; every error names the file.
    pub fn read(path: &Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the chain file {}", path.display()))?;
        Self::parse(&text)
            .and_then(|file| file.check())
            .with_context(|| format!("{}", path.display()))
    }

    /// The checks the NixOS lab makes of its chain, with the same words.
    pub fn check(self) -> anyhow::Result<Topology> {
        let hops = self.hops;
        anyhow::ensure!(!hops.is_empty(), "the chain must contain at least one hop");
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut by_port: HashMap<u16, &str> = HashMap::new();
        for (index, hop) in hops.iter().enumerate() {
            let name = hop.name.as_str();
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "hop name `{name}` must match [A-Za-z0-9_-]+"
            );
            anyhow::ensure!(
                by_name.insert(name, index).is_none(),
                "hop name `{name}` is used more than once"
            );
            if hop.port != 0 {
                if let Some(other) = by_port.insert(hop.port, name) {
                    anyhow::bail!(
                        "port {} is used by more than one hop (`{other}` and `{name}`)",
                        hop.port
                    );
                }
            }
            anyhow::ensure!(
                (0.0..=1.0).contains(&hop.error_rate),
                "hop `{name}`: errorRate {} is not between 0 and 1",
                hop.error_rate
            );
            if let Some(sampler) = hop.sampler {
                anyhow::ensure!(
                    !sampler.needs_ratio() || hop.sampler_arg.is_some(),
                    "hop `{name}`: sampler `{}` needs samplerArg",
                    sampler.as_str()
                );
            }
            if let Some(ratio) = hop.sampler_arg {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&ratio),
                    "hop `{name}`: samplerArg {ratio} is not between 0 and 1"
                );
            }
        }
        let mut calls = Vec::with_capacity(hops.len());
        for (index, hop) in hops.iter().enumerate() {
            let names: Vec<&str> = match &hop.calls {
                Some(names) => names.iter().map(String::as_str).collect(),
                None => hops
                    .get(index + 1)
                    .map(|next| next.name.as_str())
                    .into_iter()
                    .collect(),
            };
            let mut callees = Vec::with_capacity(names.len());
            for callee in names {
                anyhow::ensure!(callee != hop.name, "hop `{}` calls itself", hop.name);
                let Some(&target) = by_name.get(callee) else {
                    anyhow::bail!("hop `{}` calls unknown hop `{callee}`", hop.name);
                };
                callees.push(target);
            }
            calls.push(callees);
        }
        let start_order = callees_first(&hops, &calls)?;
        Ok(Topology {
            hops,
            calls,
            start_order,
        })
    }
}

/// Every hop after the hops it calls (depth-first, post-order), or the
/// cycle that makes that impossible, by hop names.
fn callees_first(hops: &[HopSpec], calls: &[Vec<usize>]) -> anyhow::Result<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        hop: usize,
        calls: &[Vec<usize>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match marks[hop] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let from = path.iter().position(|&h| h == hop).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(hop);
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[hop] = Mark::Visiting;
        path.push(hop);
        for &callee in &calls[hop] {
            visit(callee, calls, marks, path, order)?;
        }
        path.pop();
        marks[hop] = Mark::Done;
        order.push(hop);
        Ok(())
    }

    let mut marks = vec![Mark::New; hops.len()];
    let mut order = Vec::with_capacity(hops.len());
    for hop in 0..hops.len() {
        visit(hop, calls, &mut marks, &mut Vec::new(), &mut order).map_err(|cycle| {
            let names: Vec<String> = cycle
                .iter()
                .map(|&h| format!("`{}`", hops[h].name))
                .collect();
            anyhow::anyhow!("hops {} form a cycle", names.join(" → "))
        })?;
    }
    Ok(order)
}

impl Topology {
    /// The lab's default chain.
    pub fn default_chain() -> anyhow::Result<Self> {
        ChainFile::parse(DEFAULT_CHAIN)?.check()
    }

    /// `service.name` (and the unit name in the VM) of hop `index`.
    pub fn service_name(&self, index: usize) -> String {
        service_name(&self.hops[index].name)
    }
}

/// As the NixOS lab names its units and services.
pub fn service_name(hop: &str) -> String {
    format!("microservice-{hop}")
}

impl HopSpec {
    /// The service's environment for this hop, given where its callees
    /// listen; where it listens and exports is the runner's business.
    pub fn environment(&self, callee_urls: &[String]) -> Vec<(String, String)> {
        let mut env = vec![
            ("OTEL_SERVICE_NAME".to_string(), service_name(&self.name)),
            ("RESPONSE_TIME".to_string(), self.response_time.to_string()),
            ("RESPONSE_TIME_JITTER".to_string(), self.jitter.to_string()),
            ("ERROR_RATE".to_string(), self.error_rate.to_string()),
            (
                "EXTERNAL_CALL_MODE".to_string(),
                match self.call_mode {
                    CallMode::Sequential => "sequential",
                    CallMode::Parallel => "parallel",
                }
                .to_string(),
            ),
            (
                "EXTERNAL_CALL_RETRIES".to_string(),
                self.call_retries.to_string(),
            ),
            (
                "PROPAGATION".to_string(),
                match self.propagation {
                    Propagation::W3c => "w3c",
                    Propagation::None => "none",
                }
                .to_string(),
            ),
        ];
        let mut optional = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                env.push((key.to_string(), value));
            }
        };
        optional("TITLE", self.title.clone());
        optional(
            "EXTERNAL_CALL_URL",
            (!callee_urls.is_empty()).then(|| callee_urls.join(",")),
        );
        optional(
            "EXTERNAL_CALL_TIMEOUT",
            self.call_timeout.map(|ms| ms.to_string()),
        );
        optional("BAGGAGE", self.baggage.clone());
        optional(
            "OTEL_TRACES_SAMPLER",
            self.sampler.map(|s| s.as_str().to_string()),
        );
        optional(
            "OTEL_TRACES_SAMPLER_ARG",
            self.sampler_arg.map(|r| r.to_string()),
        );
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Topology, String> {
        ChainFile::parse(json)
            .and_then(ChainFile::check)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn the_default_chain_is_three_hops_in_a_row() {
        let chain = Topology::default_chain().unwrap();
        let ports: Vec<u16> = chain.hops.iter().map(|h| h.port).collect();
        assert_eq!(ports, [8080, 8081, 8082]);
        assert_eq!(chain.calls, [vec![1], vec![2], vec![]]);
        assert_eq!(chain.start_order, [2, 1, 0]);
        assert_eq!(chain.service_name(0), "microservice-1");
    }

    #[test]
    fn the_readmes_example_chain_file_is_the_four_hop_fan_out() {
        let chain = check(include_str!("../../chains/fan-out.json")).unwrap();
        let names: Vec<&str> = chain.hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["gateway", "catalog", "pricing", "stock"]);
        assert_eq!(chain.calls, [vec![1, 2], vec![], vec![3], vec![]]);
        assert_eq!(chain.hops[0].call_mode, CallMode::Parallel);
    }

    #[test]
    fn fan_out_starts_every_callee_first() {
        let chain = check(
            r#"{"hops": [
              {"name": "gateway", "port": 8080, "calls": ["catalog", "pricing"], "callMode": "parallel"},
              {"name": "catalog", "port": 8081, "calls": []},
              {"name": "pricing", "port": 8082},
              {"name": "stock", "port": 8083}]}"#,
        )
        .unwrap();
        assert_eq!(chain.calls, [vec![1, 2], vec![], vec![3], vec![]]);
        let position = |hop| chain.start_order.iter().position(|&h| h == hop).unwrap();
        assert!(position(1) < position(0) && position(2) < position(0));
        assert!(position(3) < position(2));
    }

    #[test]
    fn bad_chains_are_refused_naming_the_hop() {
        for (json, message) in [
            (r#"{"hops": []}"#, "at least one hop"),
            (
                r#"{"hops": [{"name": "a", "calls": ["ghost"]}]}"#,
                "hop `a` calls unknown hop `ghost`",
            ),
            (
                r#"{"hops": [{"name": "a", "port": 1}, {"name": "b", "port": 1}]}"#,
                "port 1 is used by more than one hop (`a` and `b`)",
            ),
            (
                r#"{"hops": [{"name": "a"}, {"name": "b"}, {"name": "c", "calls": ["a"]}]}"#,
                "hops `a` → `b` → `c` → `a` form a cycle",
            ),
            (
                r#"{"hops": [{"name": "a", "calls": ["a"]}]}"#,
                "hop `a` calls itself",
            ),
            (
                r#"{"hops": [{"name": "a"}, {"name": "a"}]}"#,
                "`a` is used more than once",
            ),
            (r#"{"hops": [{"name": "a b"}]}"#, "`a b` must match"),
            (
                r#"{"hops": [{"name": "a", "errorRate": 2}]}"#,
                "hop `a`: errorRate 2 is not between 0 and 1",
            ),
            (
                r#"{"hops": [{"name": "a", "sampler": "traceidratio"}]}"#,
                "hop `a`: sampler `traceidratio` needs samplerArg",
            ),
            (
                r#"{"hops": [{"name": "a", "reponseTime": 5}]}"#,
                "unknown field `reponseTime`",
            ),
        ] {
            let error = check(json)
                .err()
                .unwrap_or_else(|| panic!("{json} was accepted"));
            assert!(error.contains(message), "{json}: {error}");
        }
    }

    #[test]
    fn lab_json_from_the_vm_is_a_chain_file() {
        let chain = check(
            r#"{"hops": [
              {"name": "1", "title": "Microservice 1", "port": 8080, "responseTime": 50, "jitter": 0,
               "errorRate": 0, "callMode": "sequential", "calls": ["2"], "entry": true,
               "serviceName": "microservice-1", "unit": "microservice-1.service",
               "url": "http://127.0.0.1:8080/", "calledServices": ["microservice-2"]},
              {"name": "2", "title": null, "port": 8081, "responseTime": 100, "jitter": 0,
               "errorRate": 0, "callMode": "sequential", "calls": [], "entry": false,
               "serviceName": "microservice-2", "unit": "microservice-2.service",
               "url": "http://127.0.0.1:8081/", "calledServices": []}],
             "ports": {"grafana": 3000}, "entryUrl": "http://localhost:8080/"}"#,
        )
        .unwrap();
        assert_eq!(chain.calls, [vec![1], vec![]]);
    }

    #[test]
    fn the_environment_names_every_setting() {
        let chain = check(
            r#"{"hops": [{"name": "a", "title": "A", "responseTime": 5, "jitter": 2, "errorRate": 0.5,
              "callTimeout": 300, "callRetries": 2, "propagation": "none", "baggage": "k=v",
              "sampler": "traceidratio", "samplerArg": 0.25, "callMode": "parallel", "calls": []}]}"#,
        )
        .unwrap();
        let env: HashMap<String, String> = chain.hops[0]
            .environment(&["http://127.0.0.1:1/".into(), "http://127.0.0.1:2/".into()])
            .into_iter()
            .collect();
        for (key, value) in [
            ("OTEL_SERVICE_NAME", "microservice-a"),
            ("TITLE", "A"),
            ("RESPONSE_TIME", "5"),
            ("RESPONSE_TIME_JITTER", "2"),
            ("ERROR_RATE", "0.5"),
            (
                "EXTERNAL_CALL_URL",
                "http://127.0.0.1:1/,http://127.0.0.1:2/",
            ),
            ("EXTERNAL_CALL_MODE", "parallel"),
            ("EXTERNAL_CALL_TIMEOUT", "300"),
            ("EXTERNAL_CALL_RETRIES", "2"),
            ("PROPAGATION", "none"),
            ("BAGGAGE", "k=v"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ] {
            assert_eq!(env.get(key).map(String::as_str), Some(value), "{key}");
        }
    }
}
