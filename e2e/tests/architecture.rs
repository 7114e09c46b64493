//! The workspace's structure, checked without a cluster: no module of a crate depends on
//! itself through other modules (a cycle makes a newcomer read both files to understand
//! either, and hides which one owns a responsibility).
//!
//! The check reads the sources as text: every `use` tree and every `crate::…`, `super::…` or
//! `self::…` path is resolved to the file of the longest module prefix it names, giving an
//! edge from the file that writes it to that file (`mod` declarations are not edges).

// A test may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use kubetwin_e2e::tools::repo_root;

/// Module path (`fleet::state`) → file, for one crate.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut map = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "bin") {
                    continue;
                }
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> =
                relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
                parts.pop();
            }
            map.insert(parts.join("::"), path);
        }
    }
    map
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or_default().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// Every path a file names: its `use` trees and inline `crate::`/`super::`/`self::` paths.
fn paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let code: String =
        text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let lines: Vec<&str> = code.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let statement = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|prefix| line.strip_prefix(prefix));
        if let Some(start) = statement {
            let mut tree = start.to_string();
            while !tree.contains(';') && i + 1 < lines.len() {
                i += 1;
                tree.push_str(lines[i]);
            }
            found.extend(expand(tree.split(';').next().unwrap_or_default()));
        }
        i += 1;
    }
    for anchor in ["crate::", "super::", "self::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(anchor) {
            let tail = &rest[at..];
            let path: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            // `crate::{…}` is a use tree, already expanded above.
            if path.len() > anchor.len() - 2 {
                found.push(path.to_string());
            }
            rest = &rest[at + anchor.len()..];
        }
    }
    found
}

/// Resolves a path named in module `from` to a module of the crate.
fn resolve(from: &str, path: &str, modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if from.is_empty() { Vec::new() } else { from.split("::").collect() };
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        Some("self") => {
            segments.remove(0);
        }
        Some(first) => {
            // A path relative to this module: only a child module of it counts.
            let child =
                if from.is_empty() { first.to_string() } else { format!("{from}::{first}") };
            if !modules.contains_key(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = None;
    for n in 0..=segments.len() {
        let mut candidate = base.clone();
        candidate.extend_from_slice(&segments[..n]);
        let name = candidate.join("::");
        if modules.contains_key(&name) {
            best = Some(name);
        }
    }
    best
}

/// The cycles among the modules of the crate in `src`, as lists of module paths.
fn cycles(src: &Path) -> Vec<Vec<String>> {
    let modules = modules(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        // Test modules may use what they test; only the code that ships counts.
        let shipped = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for path in paths(shipped) {
            if let Some(target) = resolve(name, &path, &modules).filter(|t| t != name) {
                edges.entry(name.clone()).or_default().insert(target);
            }
        }
    }
    let mut found = Vec::new();
    for start in modules.keys() {
        // Depth-first search for a path back to `start` through modules after it in order,
        // so each cycle is reported once.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, trail)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    found.push(trail.clone());
                } else if next > start && !trail.contains(next) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[test]
fn no_crate_has_a_module_cycle() {
    let root = repo_root();
    let mut report = Vec::new();
    for krate in ["api", "protocol", "mqtt", "operator", "device-sim", "e2e", "bench"] {
        for cycle in cycles(&root.join(krate).join("src")) {
            report.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(report.is_empty(), "module cycles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{a::A, c};\npub struct B;\n").unwrap();
    assert_eq!(cycles(src), [vec!["a".to_string(), "b".to_string()]]);
    std::fs::write(src.join("b.rs"), "pub struct B;\n").unwrap();
    assert!(cycles(src).is_empty());
}
