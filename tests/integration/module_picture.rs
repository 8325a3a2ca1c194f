//! The module picture STYLE.md draws, checked on the sources: no two modules import each other
//! (directly or round a circle), `dump/` knows no database, signature or network, `db/` no
//! HTTP, CLI or terminal, and `http/routes/` print nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module (`http::budget`) and the modules it names through `crate::` or `super::`,
/// leaving out its tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
                let relative = path.strip_prefix(&src).unwrap().with_extension("");
                let mut parts: Vec<String> = relative.iter().map(|p| p.to_str().unwrap().to_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_owned();
                found.push((parts.join("::"), code));
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|(name, _)| name.clone()).collect();
    // The longest known module a path names: `crate::db::users::User` is `db::users`.
    let resolve = |path: &str| {
        let mut parts: Vec<&str> = path.split("::").collect();
        while !parts.is_empty() {
            let candidate = parts.join("::");
            if modules.contains(&candidate) {
                return Some(candidate);
            }
            parts.pop();
        }
        None
    };
    let mut graph = BTreeMap::new();
    for (name, code) in &files {
        let parent = name.rsplit_once("::").map_or("", |(parent, _)| parent);
        let mut targets = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", format!("{parent}::"))] {
            for (at, _) in code.match_indices(prefix) {
                let rest: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                    .collect();
                let full = format!("{base}{}", rest.trim_end_matches(':')).trim_start_matches("::").to_owned();
                if let Some(target) = resolve(&full) {
                    let nested = target.starts_with(&format!("{name}::")) || name.starts_with(&format!("{target}::"));
                    if target != *name && !nested && !target.is_empty() {
                        targets.insert(target);
                    }
                }
            }
        }
        graph.insert(name.clone(), targets);
    }
    graph
}

/// Whether `to` is reachable from `from`.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(module) = stack.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph.len() > 40, "the sources were found: {}", graph.len());
    let circles: Vec<String> = graph
        .iter()
        .flat_map(|(module, targets)| targets.iter().map(move |target| (module, target)))
        .filter(|(module, target)| reaches(&graph, target, module))
        .map(|(module, target)| format!("{module} -> {target}"))
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:?}");
}

#[test]
fn each_room_imports_only_what_it_may() {
    let graph = imports();
    let forbidden: &[(&str, &[&str])] = &[
        ("dump", &["db", "signature", "http", "commands", "remote", "output", "client"]),
        ("db", &["http", "cli", "commands", "output"]),
        ("http", &["cli", "commands", "output"]),
        ("smoke", &["db", "output"]),
    ];
    for (room, never) in forbidden {
        for (module, targets) in graph.iter().filter(|(m, _)| *m == room || m.starts_with(&format!("{room}::"))) {
            for target in targets {
                let top = target.split("::").next().unwrap();
                assert!(!never.contains(&top), "{module} imports {target}");
            }
        }
    }
    for (module, _) in graph.iter().filter(|(m, _)| m.starts_with("http::routes")) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module.replace("::", "/") + ".rs");
        let code = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!code.contains("println!") && !code.contains("eprintln!"), "{module} prints");
    }
}

/// ARCHITECTURE.md's map of `src/` is the tree: each module of the tree is on it, and each
/// entry on it is in the tree.
#[test]
fn the_architecture_map_names_every_module_and_only_modules_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let block =
        text.split("```\nsrc/\n").nth(1).expect("a ```-block that starts with src/").split("```").next().unwrap();
    // An entry is two spaces in, then a name: `memory.rs`, `db/`, `output/table.rs`.
    let mapped: BTreeSet<String> = block
        .lines()
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|entry| entry.ends_with(".rs") || entry.ends_with('/'))
        .map(str::to_owned)
        .collect();
    let mut tree = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            // A folder beside a file of its name (output.rs, output/) holds that module's parts.
            if !root.join("src").join(format!("{name}.rs")).exists() {
                tree.insert(format!("{name}/"));
            }
        } else if name.ends_with(".rs") {
            tree.insert(name);
        }
    }
    let unmapped: Vec<_> = tree.iter().filter(|entry| !mapped.contains(*entry)).collect();
    assert!(unmapped.is_empty(), "add to ARCHITECTURE.md's map: {unmapped:?}");
    let missing: Vec<_> =
        mapped.iter().filter(|entry| !root.join("src").join(entry.trim_end_matches('/')).exists()).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md maps what the tree does not have: {missing:?}");
}
