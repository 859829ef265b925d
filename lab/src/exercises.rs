//! The exercises: one JSON file each under `exercises/`, read here and by
//! the NixOS lab (`builtins.fromJSON`). A file is a chain file (`hops`) plus
//! what makes it an exercise:
//!
//! - `order`, `title`, `summary`: for listings;
//! - the learner's guide (`setup`, `do`, `lookAt`, `see`, `question`,
//!   `answer`, see [`Guide`]): printed when it starts, and rendered into
//!   docs/exercises.md by [`doc`];
//! - `variants`: a second way to run it, `<name>-<variant>`, as per-hop
//!   settings over the base chain (`{"hops": {"<hop>": {"callMode": …}}}`);
//! - `collector`: processors the collector needs (`tail_sampling`);
//! - `signature`: what the traces of its requests must show, checked by
//!   [`signature`] (a variant may give its own, which replaces the base's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chain_file::{ChainFile, Topology, messages};
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
    collector: Option<Collector>,
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
    /// When the variant's traces differ from the base's.
    #[serde(default)]
    signature: Option<Signature>,
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
    let mut exercises = vec![Exercise {
        name: name.to_string(),
        order: (file.order, 0),
        title: file.title.clone(),
        summary: file.summary,
        guide: guide.clone(),
        base: name.to_string(),
        topology: topology(file.hops.clone())?,
        collector: file.collector.clone(),
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
            collector: file.collector.clone(),
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
