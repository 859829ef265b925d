//! A test of the crate's shape: no two modules import each other, directly
//! or through others, as files or as top-level modules. It reads the
//! sources: every `crate::` and `super::` path outside the unit tests is an
//! edge to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Each `.rs` file under `dir` as its module path and its code before
/// `mod tests` (unit tests sit at the end and may use anything).
fn modules(dir: &Path, prefix: &[String], found: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // src/bin/*: each binary is a crate of its own.
        if path.is_dir() && prefix.is_empty() && name == "bin" {
            continue;
        }
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.to_vec();
            if !matches!(name.as_str(), "mod" | "lib" | "main") {
                module.push(name);
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // The unit tests sit at the end; a test-only item before them still counts.
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            found.insert(module, code.to_string());
        }
    }
}

/// The modules each module names, as `a::b` paths.
fn edges(found: &BTreeMap<Module, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in found {
        if module.is_empty() {
            continue;
        }
        let targets = edges.entry(module.join("::")).or_default();
        let code: String = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (start, anchor) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            let rest = &code[start + anchor.len()..];
            // `crate::{a::b, c}` names a::b and c; `crate::a::b` names a::b.
            let paths: Vec<Module> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split(['}', ';'])
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|item| path(item.trim_start()))
                    .collect(),
                None => vec![path(rest)],
            };
            let base = if anchor == "super::" {
                &module[..module.len() - 1]
            } else {
                &[][..]
            };
            for path in paths {
                let mut target = [base, &path[..]].concat();
                while !target.is_empty() && !found.contains_key(&target) {
                    target.pop();
                }
                if !target.is_empty() && target != *module {
                    targets.insert(target.join("::"));
                }
            }
        }
    }
    edges
}

/// The same edges between top-level modules.
fn top_level(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |path: &str| path.split("::").next().unwrap_or_default().to_string();
    let mut collapsed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in edges {
        let from = top(from);
        let entry = collapsed.entry(from.clone()).or_default();
        entry.extend(targets.iter().map(|t| top(t)).filter(|t| *t != from));
    }
    collapsed
}

/// The `a::b::c` path `text` starts with, up to a `{`, `*` or anything else.
fn path(text: &str) -> Module {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    segments
}

/// A path of modules that leads back to its start, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_modules_import_each_other() {
    let mut found = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut found,
    );
    let edges = edges(&found);
    assert!(
        edges["routes::chain"].contains("state") && edges["startup"].contains("routes"),
        "the reader sees the imports: {edges:#?}"
    );
    for edges in [top_level(&edges), edges] {
        if let Some(cycle) = cycle(&edges) {
            panic!(
                "modules import each other: {}\n{edges:#?}",
                cycle.join(" -> ")
            );
        }
    }
}

/// The lab crate (the runner, the bench, the trace model, the test support)
/// is held to the same rule.
#[test]
fn no_two_modules_of_the_lab_crate_import_each_other() {
    let mut found = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/src"),
        &[],
        &mut found,
    );
    let edges = edges(&found);
    assert!(
        edges["runner"].contains("trace") && edges["exercises"].contains("chain_file"),
        "the reader sees the imports: {edges:#?}"
    );
    for edges in [top_level(&edges), edges] {
        if let Some(cycle) = cycle(&edges) {
            panic!(
                "lab modules import each other: {}\n{edges:#?}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn a_circle_is_found() {
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
}
