//! Parts of the docs that are rendered from the project's data (the
//! exercises, the chain schema), so that the text a reader sees cannot drift
//! from what the lab runs. Tests compare the committed files with what they
//! should be; `UPDATE_DOCS=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

/// The workspace's root, where README.md and docs/ are.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `text` with what stands between the lines `start` and `end` replaced by
/// `section`; `file` names the text in errors.
pub fn with_section(
    text: &str,
    file: &str,
    start: &str,
    end: &str,
    section: &str,
) -> anyhow::Result<String> {
    let from = text
        .find(start)
        .ok_or_else(|| anyhow::anyhow!("{file} has no line `{start}`"))?
        + start.len();
    let to = text[from..]
        .find(end)
        .ok_or_else(|| anyhow::anyhow!("{file} has no line `{end}` after `{start}`"))?
        + from;
    // Blank lines around the section, so that the comments cannot join it.
    Ok(format!("{}\n\n{}\n{}", &text[..from], section, &text[to..]))
}

/// Compares the committed file at `path` with `expected`, or rewrites it
/// under `UPDATE_DOCS=1`. The error names the file, the first line that
/// differs, and `source`, what it is rendered from.
pub fn check_committed(path: &Path, expected: &str, source: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, expected).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let committed =
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if committed == expected {
        return Ok(());
    }
    let line = committed
        .lines()
        .zip(expected.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(expected.lines().count()));
    Err(format!(
        "{} differs from its rendering of {source} (first difference at line {}); \
         regenerate it with: UPDATE_DOCS=1 cargo test",
        path.display(),
        line + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_replaces_only_what_is_between_its_markers() {
        let text = "a\n<!-- s -->\nold\n<!-- e -->\nb\n";
        let new = with_section(text, "T", "<!-- s -->", "<!-- e -->", "new\n").unwrap();
        assert_eq!(new, "a\n<!-- s -->\n\nnew\n\n<!-- e -->\nb\n");
        let error = with_section("a\n", "T", "<!-- s -->", "<!-- e -->", "").unwrap_err();
        assert_eq!(error.to_string(), "T has no line `<!-- s -->`");
    }
}
