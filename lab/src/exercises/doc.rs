//! docs/exercises.md and the README's list of exercises, rendered from the
//! exercise files so that the texts exist once. The test below fails when the
//! committed files differ from what these functions render;
//! `UPDATE_DOCS=1 cargo test -p lab exercises_doc` writes them.

use std::fmt::Write as _;

use super::Exercise;

/// The prose above the exercises: words, switching, where to look.
const INTRO: &str = include_str!("doc_intro.md");

/// Where the README's list starts and ends.
pub const README_START: &str = "<!-- exercises: generated from exercises/*.json -->";
pub const README_END: &str = "<!-- exercises: end -->";

/// The whole of docs/exercises.md.
pub fn exercises_md(exercises: &[Exercise]) -> String {
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from exercises/*.json and lab/src/exercises/doc_intro.md by\n     \
         lab/src/exercises/doc.rs: edit those, then run\n     \
         UPDATE_DOCS=1 cargo test -p lab exercises_doc -->\n\n",
    );
    out.push_str(INTRO.trim_end());
    out.push_str("\n\n");
    out.push_str(&table(exercises, ""));
    for group in groups(exercises) {
        section(&mut out, &group);
    }
    out
}

/// The README's list: one row per exercise, linking into docs/exercises.md.
pub fn readme_table(exercises: &[Exercise]) -> String {
    table(exercises, "docs/exercises.md")
}

/// `readme` with the text between its markers replaced by `table`.
pub fn with_readme_table(readme: &str, table: &str) -> anyhow::Result<String> {
    crate::generated_docs::with_section(readme, "README.md", README_START, README_END, table)
}

/// An exercise and its variants, in the files' order.
fn groups(exercises: &[Exercise]) -> Vec<Vec<&Exercise>> {
    let mut groups: Vec<Vec<&Exercise>> = Vec::new();
    for exercise in exercises {
        match groups.last_mut() {
            Some(group) if group[0].base == exercise.base => group.push(exercise),
            _ => groups.push(vec![exercise]),
        }
    }
    groups
}

fn table(exercises: &[Exercise], page: &str) -> String {
    let mut out = String::from("| exercise | what it changes |\n|---|---|\n");
    for group in groups(exercises) {
        let anchor = anchor(&heading(&group));
        for exercise in group {
            let _ = writeln!(
                out,
                "| [`{}`]({page}#{anchor}) | {} |",
                exercise.name, exercise.summary
            );
        }
    }
    out
}

fn heading(group: &[&Exercise]) -> String {
    let names: Vec<&str> = group.iter().map(|e| e.name.as_str()).collect();
    names.join(", ")
}

/// The anchor GitHub gives a heading: lower case, punctuation but `-` and
/// `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn section(out: &mut String, group: &[&Exercise]) {
    let base = group[0];
    let guide = &base.guide;
    let _ = write!(
        out,
        "\n## {}\n\n**{}.** {}\n\n",
        heading(group),
        base.title,
        guide.setup
    );
    let name = &base.name;
    let _ = write!(
        out,
        "Run it: `cargo run -- --exercise {name}`, `nix run .#local -- --exercise {name}`, \
         or in the VM `lab-exercise {name}`"
    );
    for variant in &group[1..] {
        let _ = write!(out, "; the variant the same way: `{}`", variant.name);
    }
    out.push_str(".\n\n");
    if let Some(action) = &guide.action {
        let _ = writeln!(out, "- **Do**: {action}");
    }
    let _ = writeln!(out, "- **Look at**, in Grafana: {}", guide.look_at.grafana);
    let _ = writeln!(
        out,
        "- **Look at**, with `cargo run`: {}",
        guide.look_at.terminal
    );
    let _ = writeln!(out, "- **You should see**: {}", guide.see);
    let _ = write!(
        out,
        "\n**Question**: {}\n\n<details><summary>Answer</summary>\n\n{}\n\n</details>\n",
        guide.question, guide.answer
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn check(path: &Path, expected: &str) -> Result<(), String> {
        crate::generated_docs::check_committed(path, expected, "exercises/*.json")
    }

    #[test]
    fn exercises_doc_matches_the_exercise_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let exercises = crate::exercises::all(&root.join("exercises")).unwrap();
        let readme_path = root.join("README.md");
        let readme = std::fs::read_to_string(&readme_path).unwrap();
        let readme = with_readme_table(&readme, &readme_table(&exercises)).unwrap();
        let results = [
            check(&root.join("docs/exercises.md"), &exercises_md(&exercises)),
            check(&readme_path, &readme),
        ];
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    #[test]
    fn a_group_is_an_exercise_and_its_variants() {
        let exercises = crate::exercises::all(&crate::exercises::directory()).unwrap();
        let headings: Vec<String> = groups(&exercises).iter().map(|g| heading(g)).collect();
        assert!(headings.contains(&"fan-out, fan-out-sequential".to_string()));
        assert_eq!(
            anchor("fan-out, fan-out-sequential"),
            "fan-out-fan-out-sequential"
        );
    }

    #[test]
    fn a_readme_without_markers_is_named() {
        let error = with_readme_table("# Tracing lab\n", "table").unwrap_err();
        assert!(error.to_string().contains(README_START), "{error}");
    }
}
