//! The exercises: one JSON file each under `exercises/`, read here and by
//! the NixOS lab (`builtins.fromJSON`). A file is a chain file (`hops`) plus
//! what makes it an exercise:
//!
//! - `order`, `title`, `summary`: for listings;
//! - the learner's guide (`setup`, `do`, `lookAt`, `see`, `question`,
//!   `answer`, see [`Guide`]): printed when it starts, and rendered into
//!   docs/exercises.md by [`doc`];
//! - `variants`: a second way to run it, `<name>-<variant>`, as per-hop
//!   settings over the base chain (`{"hops": {"<hop>": {"callMode": …}}}`),
//!   and `collector` keys over the base's;
//! - `collector`: processors the collector needs (`tail_sampling`), and how
//!   many collectors share it (`replicas`, `routing_key`);
//! - `terminal`: what the runner prints besides the spans, by default
//!   (`attributes`: a `--attributes` list; `logs`: the spans' log events);
//! - `signature`: what the traces of its requests must show, checked by
//!   [`signature`] (a variant may give its own, which replaces the base's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chain_file::{ChainFile, Topology, messages};
use crate::runner::attributes::Selection;
use crate::trace::tail_sampling::TailSampling;

pub mod doc;
pub mod signature;

pub use signature::Signature;

/// The checkout's `exercises/`; `LAB_EXERCISES_DIR` points elsewhere.
pub fn directory() -> PathBuf {
    std::env::var_os("LAB_EXERCISES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../exercises"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExerciseFile {
    order: u32,
    title: String,
    summary: String,
    hops: Vec<Value>,
    #[serde(default)]
    variants: BTreeMap<String, VariantFile>,
    #[serde(default)]
    collector: Option<Map<String, Value>>,
    #[serde(default)]
    terminal: TerminalFile,
    /// Multi-host only: the `tc` queueing discipline the NixOS lab puts on
    /// a hop's machine (nixos/modules/tracing-lab/netem.nix).
    #[serde(default, rename = "netem")]
    _netem: Option<serde::de::IgnoredAny>,
    // The guide's fields, flat in the file (serde's `flatten` does not
    // combine with `deny_unknown_fields`).
    setup: String,
    #[serde(default, rename = "do")]
    action: Option<String>,
    look_at: LookAt,
    see: String,
    question: String,
    answer: String,
    signature: Signature,
}

impl ExerciseFile {
    fn guide(&self) -> Guide {
        Guide {
            setup: self.setup.clone(),
            action: self.action.clone(),
            look_at: self.look_at.clone(),
            see: self.see.clone(),
            question: self.question.clone(),
            answer: self.answer.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    summary: String,
    /// Per hop name, the settings that differ from the base chain.
    hops: BTreeMap<String, Map<String, Value>>,
    /// Collector settings that differ from the base's, key by key.
    #[serde(default)]
    collector: Option<Map<String, Value>>,
    /// When the variant's traces differ from the base's.
    #[serde(default)]
    signature: Option<Signature>,
}

/// What the runner shows of an exercise's spans unless told otherwise.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminalFile {
    /// Items as `--attributes` takes them, one per string.
    #[serde(default)]
    attributes: Vec<String>,
    #[serde(default)]
    logs: bool,
}

/// The runner's defaults for an exercise: `--attributes` and `--logs`
/// replace them.
#[derive(Debug, Clone, Default)]
pub struct Terminal {
    pub attributes: Selection,
    /// Print each span's log events under it.
    pub logs: bool,
}

impl TerminalFile {
    fn check(&self) -> anyhow::Result<Terminal> {
        let attributes = Selection::from_items(&self.attributes)
            .map_err(|error| anyhow::anyhow!("terminal.attributes: {error}"))?;
        Ok(Terminal {
            attributes,
            logs: self.logs,
        })
    }
}

/// What the learner reads: in the runner, in the VM, and in docs/exercises.md.
/// A variant shares its exercise's guide.
#[derive(Debug, Clone)]
pub struct Guide {
    /// What the exercise changes in the chain.
    pub setup: String,
    /// What to do first (`do`), when looking at any trace is not enough.
    pub action: Option<String>,
    pub look_at: LookAt,
    /// What the trace shows, wherever it is drawn.
    pub see: String,
    pub question: String,
    pub answer: String,
}

/// Where to look: Grafana's (the VM and `nix run .#local`) and the
/// terminal's (`cargo run`, which has no Grafana).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookAt {
    pub grafana: String,
    pub terminal: String,
}

/// What the collector must do for an exercise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    pub tail_sampling: Option<Value>,
    /// Tail-sampling collectors behind a first tier that routes (the NixOS
    /// lab's `services.tracing-lab.collector.tailSampling.replicas`).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// What the first tier routes spans by: `traceID` (the default) or `service`.
    #[serde(default)]
    pub routing_key: Option<String>,
}

impl Collector {
    fn from_settings(settings: Map<String, Value>) -> anyhow::Result<Self> {
        let collector: Self =
            serde_json::from_value(Value::Object(settings)).context("collector")?;
        match collector.routing_key.as_deref() {
            None | Some("traceID" | "service") => {}
            Some(other) => anyhow::bail!(
                "collector.routing_key `{other}`: the lab routes by `traceID` or `service`"
            ),
        }
        if collector.replicas == Some(0) {
            anyhow::bail!("collector.replicas must be 1 or more");
        }
        Ok(collector)
    }
}

/// One runnable exercise: a file, or a variant of one.
#[derive(Debug, Clone)]
pub struct Exercise {
    pub name: String,
    pub order: (u32, u32),
    pub title: String,
    pub summary: String,
    pub guide: Guide,
    /// The exercise a variant belongs to (its file's name); its own for the base.
    pub base: String,
    pub topology: Topology,
    pub collector: Option<Collector>,
    /// What the terminal shows by default.
    pub terminal: Terminal,
    /// What its traces must show.
    pub signature: Signature,
}

impl Exercise {
    /// The tail-sampling policies the runner plays, when the collector has them.
    pub fn tail_sampling(&self) -> anyhow::Result<Option<TailSampling>> {
        self.collector
            .as_ref()
            .and_then(|c| c.tail_sampling.as_ref())
            .map(TailSampling::from_settings)
            .transpose()
            .with_context(|| format!("exercise {}", self.name))
    }

    /// What the runner cannot play: it has one in-process receiver, so it
    /// samples whole traces, as routing by trace id gives. Routing by
    /// anything else cuts traces in the Nix labs only.
    pub fn runner_differs(&self) -> Option<String> {
        let collector = self.collector.as_ref()?;
        let key = collector.routing_key.as_deref()?;
        (collector.replicas.unwrap_or(1) > 1 && key != "traceID").then(|| {
            format!(
                "This runner samples whole traces, as routing by trace id would: the traces cut by routing by `{key}` show only in the Nix labs (`nix run`, `nix run .#local`)."
            )
        })
    }
}

/// Every exercise of `dir`, variants after their base, in the files' order.
pub fn all(dir: &Path) -> anyhow::Result<Vec<Exercise>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the exercises in {}", dir.display()))?;
    let mut exercises = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        exercises.extend(read(&path, name).with_context(|| format!("{}", path.display()))?);
    }
    exercises.sort_by_key(|e| e.order);
    Ok(exercises)
}

/// The exercise called `name` (a variant: `<exercise>-<variant>`).
pub fn find(dir: &Path, name: &str) -> anyhow::Result<Exercise> {
    let exercises = all(dir)?;
    let names: Vec<&str> = exercises.iter().map(|e| e.name.as_str()).collect();
    exercises
        .iter()
        .find(|e| e.name == name)
        .cloned()
        .with_context(|| format!("no exercise `{name}`; there are: {}", names.join(", ")))
}

fn read(path: &Path, name: &str) -> anyhow::Result<Vec<Exercise>> {
    let text = std::fs::read_to_string(path)?;
    let file: ExerciseFile = serde_json::from_str(&text)?;
    let guide = file.guide();
    let terminal = file.terminal.check()?;
    let collector = |over: Option<&Map<String, Value>>| -> anyhow::Result<Option<Collector>> {
        let mut settings = file.collector.clone();
        if let Some(over) = over {
            let base = settings.get_or_insert_with(Map::new);
            base.extend(over.clone());
        }
        settings.map(Collector::from_settings).transpose()
    };
    let mut exercises = vec![Exercise {
        name: name.to_string(),
        order: (file.order, 0),
        title: file.title.clone(),
        summary: file.summary,
        guide: guide.clone(),
        base: name.to_string(),
        topology: topology(file.hops.clone())?,
        collector: collector(None)?,
        terminal: terminal.clone(),
        signature: file.signature.clone(),
    }];
    for (position, (variant, settings)) in file.variants.into_iter().enumerate() {
        let hops = with_settings(&file.hops, &settings.hops)
            .with_context(|| format!("variant `{variant}`"))?;
        exercises.push(Exercise {
            name: format!("{name}-{variant}"),
            order: (file.order, position as u32 + 1),
            title: format!("{} ({variant})", file.title),
            summary: settings.summary,
            guide: guide.clone(),
            base: name.to_string(),
            topology: topology(hops).with_context(|| format!("variant `{variant}`"))?,
            collector: collector(settings.collector.as_ref())
                .with_context(|| format!("variant `{variant}`"))?,
            terminal: terminal.clone(),
            signature: settings.signature.unwrap_or_else(|| file.signature.clone()),
        });
    }
    for exercise in &exercises {
        let tail = exercise.tail_sampling()?;
        exercise
            .signature
            .validate(&exercise.topology, tail.as_ref())
            .with_context(|| format!("exercise {}", exercise.name))?;
    }
    Ok(exercises)
}

fn topology(hops: Vec<Value>) -> anyhow::Result<Topology> {
    let file: ChainFile = serde_json::from_value(serde_json::json!({ "hops": hops }))?;
    file.check()
}

/// `hops` with `settings` laid over the hops they name. The NixOS lab's
/// twin (nixos/lib/exercises.nix) is tested on the same cases
/// (tests/chains/variant*.json).
fn with_settings(
    hops: &[Value],
    settings: &BTreeMap<String, Map<String, Value>>,
) -> anyhow::Result<Vec<Value>> {
    let mut hops = hops.to_vec();
    for (hop, values) in settings {
        let target = hops
            .iter_mut()
            .find(|h| h.get("name").and_then(Value::as_str) == Some(hop))
            .and_then(Value::as_object_mut)
            .with_context(|| messages::format("variantUnknownHop", &[("hop", hop)]))?;
        for (key, value) in values {
            target.insert(key.clone(), value.clone());
        }
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exercise_file_is_a_valid_chain() {
        let exercises = all(&directory()).unwrap();
        let names: Vec<&str> = exercises.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline",
                "slow-hop",
                "errors",
                "fan-out",
                "fan-out-sequential",
                "timeout",
                "retries",
                "broken-propagation",
                "sampling",
                "sampling-independent",
                "baggage",
                "tail-sampling",
                "logs",
                "exemplars",
                "tail-sampling-scaled",
                "tail-sampling-scaled-by-service",
                "network",
            ]
        );
        for exercise in &exercises {
            exercise.tail_sampling().unwrap();
        }
    }

    #[test]
    fn the_default_chain_is_the_baseline_exercise() {
        let baseline = find(&directory(), "baseline").unwrap();
        let default = Topology::default_chain().unwrap();
        assert_eq!(baseline.topology.hops, default.hops);
    }

    #[test]
    fn a_variant_changes_only_what_it_names() {
        let parallel = find(&directory(), "fan-out").unwrap();
        let sequential = find(&directory(), "fan-out-sequential").unwrap();
        let mut expected = parallel.topology.hops.clone();
        expected[0].call_mode = crate::chain_file::CallMode::Sequential;
        assert_eq!(sequential.topology.hops, expected);
    }

    #[test]
    fn a_variant_lays_its_collector_keys_over_the_base() {
        let by_trace = find(&directory(), "tail-sampling-scaled").unwrap();
        let by_service = find(&directory(), "tail-sampling-scaled-by-service").unwrap();
        let (base, over) = (
            by_trace.collector.clone().unwrap(),
            by_service.collector.clone().unwrap(),
        );
        assert_eq!(
            (base.replicas, base.routing_key.as_deref()),
            (Some(2), Some("traceID"))
        );
        assert_eq!(
            (over.replicas, over.routing_key.as_deref()),
            (Some(2), Some("service"))
        );
        assert_eq!(base.tail_sampling, over.tail_sampling);
        assert_eq!(by_trace.runner_differs(), None);
        assert!(by_service.runner_differs().unwrap().contains("`service`"));
    }

    #[test]
    fn a_collector_routing_by_what_the_lab_cannot_is_refused() {
        let mut settings = Map::new();
        settings.insert("routing_key".into(), "resource".into());
        let error = Collector::from_settings(settings).unwrap_err();
        assert!(error.to_string().contains("`resource`"), "{error}");
        let mut settings = Map::new();
        settings.insert("replicas".into(), 0.into());
        let error = Collector::from_settings(settings).unwrap_err();
        assert!(error.to_string().contains("replicas"), "{error}");
    }

    #[test]
    fn an_unknown_exercise_lists_the_known_ones() {
        let error = find(&directory(), "nope").unwrap_err().to_string();
        assert!(
            error.contains("no exercise `nope`; there are: baseline, slow-hop"),
            "{error}"
        );
    }

    #[test]
    fn a_guide_without_its_terminal_side_is_refused() {
        let dir = std::env::temp_dir().join(format!("lab-exercises-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(directory().join("baseline.json")).unwrap();
        let mut file: Value = serde_json::from_str(&text).unwrap();
        file["lookAt"].as_object_mut().unwrap().remove("terminal");
        std::fs::write(dir.join("broken.json"), file.to_string()).unwrap();
        let error = format!("{:#}", all(&dir).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.contains("broken.json") && error.contains("missing field `terminal`"),
            "{error}"
        );
    }

    #[test]
    fn a_typo_in_a_signature_names_the_exercise_file() {
        let dir = std::env::temp_dir().join(format!("lab-signature-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(directory().join("errors.json")).unwrap();
        let mut file: Value = serde_json::from_str(&text).unwrap();
        file["signature"]["answers"]["502"]["errrors"] = serde_json::json!({});
        std::fs::write(dir.join("broken.json"), file.to_string()).unwrap();
        let error = format!("{:#}", all(&dir).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.contains("broken.json") && error.contains("unknown field `errrors`"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_terminal_attribute_names_the_exercise_file() {
        let dir = std::env::temp_dir().join(format!("lab-terminal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(directory().join("baggage.json")).unwrap();
        let mut file: Value = serde_json::from_str(&text).unwrap();
        file["terminal"]["attributes"] = serde_json::json!(["error.*.x"]);
        std::fs::write(dir.join("broken.json"), file.to_string()).unwrap();
        let error = format!("{:#}", all(&dir).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.contains("broken.json")
                && error.contains("terminal.attributes: `error.*.x`: `*` may only end a key"),
            "{error}"
        );
    }

    /// The variant cases of tests/chains/, which nixos/lib/exercises.nix
    /// must pass too.
    #[test]
    fn variants_of_the_chain_corpus() {
        let cases = crate::chain_file::tests::corpus();
        let variants: Vec<_> = cases
            .iter()
            .filter(|(_, c)| c.get("variant").is_some())
            .collect();
        assert!(variants.len() >= 2);
        for (file, case) in variants {
            let hops = case["hops"].as_array().unwrap();
            let settings = serde_json::from_value(case["variant"].clone()).unwrap();
            let result = with_settings(hops, &settings).map_err(|e| e.to_string());
            match (&case.get("variantHops"), &case.get("variantError")) {
                (Some(expected), None) => {
                    assert_eq!(
                        &serde_json::Value::Array(result.unwrap()),
                        *expected,
                        "{file}"
                    )
                }
                (None, Some(expected)) => {
                    assert_eq!(result.unwrap_err(), expected.as_str().unwrap(), "{file}")
                }
                _ => panic!("{file}: give variantHops or variantError"),
            }
        }
    }
}
