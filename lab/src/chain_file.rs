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
//!
//! [`HopSpec`] is the one definition of a hop. To add a hop setting: add
//! its field here (doc comment, default, bounds, `x-env` naming the
//! service's variable), regenerate the schema
//! (`UPDATE_SCHEMA=1 cargo test -p lab schema`), read the variable in the
//! service (src/configuration.rs; tests/lab/configuration.rs fails until
//! it does, with the same default), and test what it does. The NixOS
//! options, the hops' environments on both sides and the checks follow
//! from the schema.

use std::path::Path;

use anyhow::Context as _;
use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

mod check;
pub mod messages;
pub mod schema;

/// The lab's default chain: the baseline exercise's.
pub const DEFAULT_CHAIN: &str = include_str!("../../exercises/baseline.json");

/// A chain file. Other top-level keys (an exercise's text, lab.json's
/// ports) are not the chain's business and are left alone.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(title = "Chain file of the tracing lab")]
pub struct ChainFile {
    /// The hops, entry first.
    pub hops: Vec<HopSpec>,
}

// The one definition of a hop: its settings, defaults, allowed values and
// descriptions, and (`x-env`) the service's variable that carries each
// setting. schema/chain.schema.json is generated from it, and the NixOS
// modules build their options from that file. A setting with `x-env` is
// passed to the service as it is (numbers as JSON numbers, strings as they
// are, null left out); `name`, `host`, `port` and `calls` wire the chain.
/// One hop of the chain: one instance of the microservice.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HopSpec {
    /// Name of the hop: it runs as `microservice-<name>` (service.name and,
    /// in the NixOS lab, systemd unit).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"), extend("x-nix-required" = true))]
    pub name: String,
    /// What the page shows for this hop; null shows the service name.
    #[serde(default)]
    #[schemars(extend("x-env" = "TITLE"))]
    pub title: Option<String>,
    /// A sentence about the hop, shown under its title on the page and in
    /// its JSON report; null shows none.
    #[serde(default)]
    #[schemars(extend("x-env" = "DESCRIPTION"))]
    pub description: Option<String>,
    /// The machine the hop runs on: a name of the NixOS lab's
    /// `services.tracing-lab.hosts`. null: the lab's own machine (the one
    /// that runs the backends). The lab runner and the local lab run every
    /// hop on one machine and refuse a chain that names a host.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub host: Option<String>,
    /// Port the hop listens on. 0 (the lab runner only): any free port; the
    /// NixOS lab needs a port on each hop.
    #[serde(default)]
    #[schemars(extend("x-nix-required" = true))]
    pub port: u16,
    /// Artificial delay of each request, in milliseconds.
    #[serde(default)]
    #[schemars(extend("x-env" = "RESPONSE_TIME"))]
    pub response_time: u64,
    /// Uniform jitter of the delay, ± milliseconds.
    #[serde(default)]
    #[schemars(extend("x-env" = "RESPONSE_TIME_JITTER"))]
    pub jitter: u64,
    /// Share of requests that fail on purpose with 500.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1), extend("x-env" = "ERROR_RATE"))]
    pub error_rate: f64,
    /// Names of the hops this one calls. null calls the next hop in the
    /// list (none for the last); [] makes it a leaf.
    #[serde(default)]
    pub calls: Option<Vec<String>>,
    /// Whether several callees are called one after the other or at once.
    #[serde(default)]
    #[schemars(extend("x-env" = "EXTERNAL_CALL_MODE"))]
    pub call_mode: CallMode,
    /// Milliseconds each attempt of a call may take before this hop gives
    /// up with 504; null keeps the service's default, 10000.
    #[serde(default)]
    #[schemars(range(min = 1), extend("x-env" = "EXTERNAL_CALL_TIMEOUT"))]
    pub call_timeout: Option<u64>,
    /// Retries of a failed call, each a CLIENT span of its own.
    #[serde(default)]
    #[schemars(range(max = 10), extend("x-env" = "EXTERNAL_CALL_RETRIES"))]
    pub call_retries: u32,
    /// Whether calls carry the trace context: `none` plays an
    /// uninstrumented client, and the callees start traces of their own.
    #[serde(default)]
    #[schemars(extend("x-env" = "PROPAGATION"))]
    pub propagation: Propagation,
    /// W3C baggage entries this hop adds for the hops below it,
    /// `key=value,...`.
    #[serde(default)]
    #[schemars(extend("x-env" = "BAGGAGE"))]
    pub baggage: Option<String>,
    /// This hop's head sampler; null follows the caller
    /// (`parentbased_always_on`).
    #[serde(default)]
    #[schemars(extend("x-env" = "OTEL_TRACES_SAMPLER"))]
    pub sampler: Option<Sampler>,
    /// The ratio of the `traceidratio` samplers.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1), extend("x-env" = "OTEL_TRACES_SAMPLER_ARG"))]
    pub sampler_arg: Option<f64>,

    // What lab.json adds to each hop: where it ran in the VM.
    #[serde(default, rename = "entry", skip_serializing)]
    #[schemars(skip)]
    _entry: Option<IgnoredAny>,
    #[serde(default, rename = "serviceName", skip_serializing)]
    #[schemars(skip)]
    _service_name: Option<IgnoredAny>,
    #[serde(default, rename = "unit", skip_serializing)]
    #[schemars(skip)]
    _unit: Option<IgnoredAny>,
    #[serde(default, rename = "url", skip_serializing)]
    #[schemars(skip)]
    _url: Option<IgnoredAny>,
    #[serde(default, rename = "calledServices", skip_serializing)]
    #[schemars(skip)]
    _called_services: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallMode {
    #[default]
    Sequential,
    Parallel,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    #[default]
    W3c,
    None,
}

/// The service's OTEL_TRACES_SAMPLER values.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
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
    /// Whether OTEL_TRACES_SAMPLER_ARG (samplerArg) must be set with it.
    pub fn needs_ratio(self) -> bool {
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

    /// The checks the NixOS lab makes of its chain, with the same words;
    /// every problem on a line of its own.
    pub fn check(self) -> anyhow::Result<Topology> {
        let problems = check::problems(&self.hops);
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(Topology::wire(self.hops))
    }
}

/// The names hop `index` calls: its `calls`, or else the next hop's.
fn callee_names(hops: &[HopSpec], index: usize) -> Vec<&str> {
    match &hops[index].calls {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => hops
            .get(index + 1)
            .map(|next| next.name.as_str())
            .into_iter()
            .collect(),
    }
}

impl Topology {
    /// The lab's default chain.
    pub fn default_chain() -> anyhow::Result<Self> {
        ChainFile::parse(DEFAULT_CHAIN)?.check()
    }

    /// Refuses a chain that names a host: `runner` runs every hop on this
    /// machine, and a hop meant for another one would silently run here.
    pub fn on_one_machine(&self, runner: &str) -> anyhow::Result<()> {
        let problems: Vec<String> = self
            .hops
            .iter()
            .filter_map(|hop| {
                let host = hop.host.as_deref()?;
                Some(messages::format(
                    "hostOnOneMachine",
                    &[("hop", &hop.name), ("host", host), ("runner", runner)],
                ))
            })
            .collect();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }

    /// Whether a hop names a host: the chain is for the multi-host lab.
    pub fn is_multi_host(&self) -> bool {
        self.hops.iter().any(|hop| hop.host.is_some())
    }

    /// `service.name` (and the unit name in the VM) of hop `index`.
    pub fn service_name(&self, index: usize) -> String {
        service_name(&self.hops[index].name)
    }
}

/// As the NixOS lab names its units and services (nixos/lib/topology.nix
/// `serviceName`).
pub fn service_name(hop: &str) -> String {
    format!("microservice-{hop}")
}

impl HopSpec {
    /// The service's environment for this hop, given where its callees
    /// listen: its service name and port, its callees' URLs, and each
    /// setting the schema gives a variable (`x-env`) that is not null.
    pub fn environment(&self, callee_urls: &[String]) -> Vec<(String, String)> {
        let mut env = vec![
            ("OTEL_SERVICE_NAME".to_string(), service_name(&self.name)),
            ("HTTP_PORT".to_string(), self.port.to_string()),
        ];
        if !callee_urls.is_empty() {
            env.push(("EXTERNAL_CALL_URL".to_string(), callee_urls.join(",")));
        }
        let values = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        for (setting, variable) in schema::hop_variables() {
            if let Some(text) = values.get(setting).and_then(schema::value_text) {
                env.push((variable.to_string(), text));
            }
        }
        env
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

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

    /// tests/chains/: every file's hops give exactly its `errors`, as the
    /// NixOS lab's eval test (nixos/tests/eval/chains.nix) demands of Nix.
    #[test]
    fn the_chain_corpus_gives_its_messages() {
        let cases = corpus();
        assert!(cases.len() >= 10, "{} cases", cases.len());
        for (file, case) in cases {
            let expected: Vec<String> = serde_json::from_value(case["errors"].clone())
                .unwrap_or_else(|e| panic!("{file}: `errors`: {e}"));
            let chain =
                ChainFile::parse(&case.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(check::problems(&chain.hops), expected, "{file}");
            let checked = chain.check();
            assert_eq!(checked.is_ok(), expected.is_empty(), "{file}");
            if let Some(spans) = case.get("htmlSpans") {
                assert!(
                    expected.is_empty() && spans.as_u64().is_some_and(|n| n > 0),
                    "{file}"
                );
            }
        }
    }

    /// Every file of tests/chains/, by name.
    pub(crate) fn corpus() -> Vec<(String, serde_json::Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/chains");
        let mut cases: Vec<(String, serde_json::Value)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                (name, value)
            })
            .collect();
        cases.sort_by(|a, b| a.0.cmp(&b.0));
        cases
    }

    #[test]
    fn one_machine_refuses_a_hop_on_a_host_naming_both() {
        let chain = check(include_str!("../../tests/chains/hosts-one-port.json")).unwrap();
        assert!(chain.is_multi_host());
        let error = format!("{:#}", chain.on_one_machine("the lab runner").unwrap_err());
        assert_eq!(error.lines().count(), 2, "{error}");
        assert!(
            error.starts_with("hop `a` runs on host `hop1`, but the lab runner runs every hop"),
            "{error}"
        );
        let here = Topology::default_chain().unwrap();
        assert!(!here.is_multi_host());
        here.on_one_machine("the lab runner").unwrap();
    }

    #[test]
    fn a_misspelt_setting_is_refused_naming_it() {
        let error = check(r#"{"hops": [{"name": "a", "reponseTime": 5}]}"#).unwrap_err();
        assert!(error.contains("unknown field `reponseTime`"), "{error}");
    }

    #[test]
    fn every_problem_is_on_a_line_of_its_own() {
        let error = check(r#"{"hops": [{"name": "a", "calls": ["a", "b"]}]}"#).unwrap_err();
        assert_eq!(error, "hop `a` calls unknown hop `b`\nhop `a` calls itself");
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
        assert_eq!(env.len(), 14, "{env:?}");
        for (key, value) in [
            ("OTEL_SERVICE_NAME", "microservice-a"),
            ("HTTP_PORT", "0"),
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

    #[test]
    fn unset_settings_are_left_to_the_service() {
        let chain = check(r#"{"hops": [{"name": "a", "port": 8080}]}"#).unwrap();
        let mut keys: Vec<String> = chain.hops[0]
            .environment(&[])
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "ERROR_RATE",
                "EXTERNAL_CALL_MODE",
                "EXTERNAL_CALL_RETRIES",
                "HTTP_PORT",
                "OTEL_SERVICE_NAME",
                "PROPAGATION",
                "RESPONSE_TIME",
                "RESPONSE_TIME_JITTER"
            ]
        );
    }
}
