//! The words a bad chain is refused with: schema/chain-messages.json, one
//! template per check, which the NixOS lab formats too.

use std::collections::HashMap;
use std::sync::OnceLock;

const TEMPLATES: &str = include_str!("../../../schema/chain-messages.json");

fn templates() -> &'static HashMap<String, serde_json::Value> {
    static PARSED: OnceLock<HashMap<String, serde_json::Value>> = OnceLock::new();
    // The file is part of the build; a test proves that it parses.
    PARSED.get_or_init(|| serde_json::from_str(TEMPLATES).unwrap_or_default())
}

/// Template `key` with each `{name}` replaced by its value.
pub fn format(key: &str, values: &[(&str, &str)]) -> String {
    let Some(template) = templates().get(key).and_then(|t| t.as_str()) else {
        return format!("{key} (no such message in schema/chain-messages.json)");
    };
    values
        .iter()
        .fold(template.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

/// Hop names as messages list them: "`a`, `b`" (`separator` between).
pub fn hop_list<'a>(names: impl IntoIterator<Item = &'a str>, separator: &str) -> String {
    names
        .into_iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse_and_are_all_text() {
        let parsed: HashMap<String, serde_json::Value> = serde_json::from_str(TEMPLATES).unwrap();
        assert!(parsed.len() > 10);
        assert!(parsed.values().all(|v| v.is_string()));
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            format("callsItself", &[("hop", "a")]),
            "hop `a` calls itself"
        );
        assert!(format("nope", &[]).contains("no such message"));
    }
}
