//! schema/chain.schema.json: the JSON Schema of a chain file, generated
//! from [`ChainFile`] and committed, so that the NixOS modules (which
//! cannot run Rust) build their hop options, defaults and checks from it.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::{ChainFile, Sampler};

/// Where the committed schema lives, from the workspace root.
pub const PATH: &str = "schema/chain.schema.json";

const HOP_PROPERTIES: &str = "/properties/hops/items/properties";

/// The schema of a chain file, with every subschema inlined (one level of
/// lookup less for the Nix reader).
pub fn generate() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<ChainFile>().to_value();
    if let Value::Object(root) = &mut schema {
        root.insert(
            "$comment".to_string(),
            Value::String(
                "Generated from lab/src/chain_file.rs: edit the Rust types, then \
                 `UPDATE_SCHEMA=1 cargo test -p lab schema`."
                    .to_string(),
            ),
        );
    }
    if let Some(Value::Object(sampler)) = schema.pointer_mut(&format!("{HOP_PROPERTIES}/sampler")) {
        // Which values of a setting need another one set: the rule both
        // checks (Rust and Nix) apply, from the one place that knows it.
        let needing: Vec<Value> = sampler
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|value| {
                serde_json::from_value::<Sampler>((*value).clone()).is_ok_and(Sampler::needs_ratio)
            })
            .cloned()
            .collect();
        let requires = Map::from_iter([("samplerArg".to_string(), Value::Array(needing))]);
        sampler.insert("x-requires".to_string(), Value::Object(requires));
    }
    schema
}

/// The text [`PATH`] must hold.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&generate()).unwrap_or_default();
    text.push('\n');
    text
}

/// A hop's properties, by name (alphabetical, as Nix lists them too).
pub fn hop_properties() -> &'static Map<String, Value> {
    static PROPERTIES: OnceLock<Map<String, Value>> = OnceLock::new();
    PROPERTIES.get_or_init(|| {
        generate()
            .pointer(HOP_PROPERTIES)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    })
}

/// Each setting passed to the service, with its variable (`x-env`).
pub fn hop_variables() -> impl Iterator<Item = (&'static str, &'static str)> {
    hop_properties().iter().filter_map(|(setting, property)| {
        let variable = property.get("x-env")?.as_str()?;
        Some((setting.as_str(), variable))
    })
}

/// The pattern a hop name must match.
pub fn name_pattern() -> String {
    pattern_of("name")
}

/// The pattern of a hop's `host`: a machine name, as a hop's name.
pub fn host_pattern() -> String {
    pattern_of("host")
}

fn pattern_of(property: &str) -> String {
    hop_properties()
        .get(property)
        .and_then(|p| p.get("pattern"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A setting's value as the service reads it, and as Nix's `toJSON` writes
/// it: strings as they are, numbers as JSON numbers (2, not 2.0); null is
/// no value.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(match number.as_f64() {
            Some(float) if number.is_f64() => float.to_string(),
            _ => number.to_string(),
        }),
        other => Some(other.to_string()),
    }
}

/// Where docs/configuration.md shows [`settings_table`].
pub const DOCS_START: &str = "<!-- chain settings: generated from schema/chain.schema.json -->";
pub const DOCS_END: &str = "<!-- chain settings: end -->";

/// The hop settings as a Markdown table for the docs: key, default, the
/// service's variable it sets, and what it means (the schema's description
/// with its allowed values).
pub fn settings_table() -> String {
    let mut table = String::from("| key | default | sets | meaning |\n|---|---|---|---|\n");
    let code = |text: &str| format!("`{text}`");
    for (key, property) in hop_properties() {
        let default = match property.get("default") {
            _ if property.get("x-nix-required").is_some() => "required".to_string(),
            None | Some(Value::Null) => "none".to_string(),
            Some(value) => code(&value_text(value).unwrap_or_default()),
        };
        let variable = property
            .get("x-env")
            .and_then(Value::as_str)
            .map_or("—".to_string(), code);
        let mut meaning = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(values) = property.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values
                .iter()
                .filter_map(value_text)
                .map(|v| code(&v))
                .collect();
            meaning.push_str(&format!(" One of {}.", values.join(", ")));
        }
        let bound = |name| property.get(name).and_then(value_text);
        match (bound("minimum"), bound("maximum")) {
            (Some(min), Some(max)) if key != "port" => {
                meaning.push_str(&format!(" From {min} to {max}."))
            }
            _ => {}
        }
        table.push_str(&format!(
            "| {} | {default} | {variable} | {} |\n",
            code(key),
            meaning.replace('|', "\\|")
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md's table of hop settings is rendered from the
    /// schema (`UPDATE_DOCS=1 cargo test` rewrites it).
    #[test]
    fn the_docs_table_of_hop_settings_is_the_schemas() {
        let path = crate::generated_docs::root().join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = crate::generated_docs::with_section(
            &text,
            "docs/configuration.md",
            DOCS_START,
            DOCS_END,
            &settings_table(),
        )
        .unwrap();
        crate::generated_docs::check_committed(&path, &expected, "schema/chain.schema.json")
            .unwrap();
    }

    /// The committed schema is what the Rust types generate. To regenerate
    /// it after changing them: `UPDATE_SCHEMA=1 cargo test -p lab schema`.
    #[test]
    fn the_committed_schema_is_generated_from_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(PATH);
        let generated = text();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{PATH} differs from what lab/src/chain_file.rs generates; \
             regenerate it with `UPDATE_SCHEMA=1 cargo test -p lab schema` and commit it"
        );
    }

    #[test]
    fn every_setting_names_its_variable() {
        let variables: Vec<(&str, &str)> = hop_variables().collect();
        assert!(variables.contains(&("responseTime", "RESPONSE_TIME")));
        assert!(variables.contains(&("samplerArg", "OTEL_TRACES_SAMPLER_ARG")));
        let wiring = ["name", "host", "port", "calls"];
        for (setting, _) in hop_properties() {
            assert!(
                wiring.contains(&setting.as_str()) || variables.iter().any(|(s, _)| s == setting),
                "{setting} has no x-env"
            );
        }
    }

    #[test]
    fn values_read_as_nix_writes_them() {
        use serde_json::json;
        for (value, text) in [
            (json!(0.0), Some("0")),
            (json!(2.0), Some("2")),
            (json!(0.05), Some("0.05")),
            (json!(300), Some("300")),
            (json!("w3c"), Some("w3c")),
            (json!(null), None),
        ] {
            assert_eq!(value_text(&value).as_deref(), text, "{value}");
        }
    }

    #[test]
    fn ratio_samplers_need_their_ratio() {
        let sampler = &hop_properties()["sampler"];
        assert_eq!(
            sampler["x-requires"]["samplerArg"],
            serde_json::json!(["traceidratio", "parentbased_traceidratio"])
        );
    }
}
