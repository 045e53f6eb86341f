//! host/'s layers go one way down: cli → front → app → transport → platform.
//!
//! Reads every source file under src/, collects the modules each one names (`crate::x::y`,
//! `super::y`), and fails on a reference to a higher layer, on an import cycle between any
//! two modules, and on clap outside the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: [&str; 5] = ["platform", "transport", "app", "front", "cli"];

fn rank(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| *l == top)
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/app/pair.rs` → `app::pair`; `src/app/mod.rs` → `app`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    parts.join("::")
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere) and
/// without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file's code names, as known module paths (the longest that exists).
fn references(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.split("::").collect();
        // A file `x/y.rs` is module x::y; `super` is x. A `mod.rs` is x itself, whose
        // `super` is the crate, but its children use `super` for it: both handled by
        // resolving `super::` against the module's own parent.
        p.pop();
        p
    };
    let bytes = code.as_bytes();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let mut path = base.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            for seg in code[from..].split("::") {
                let name: String = seg
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.is_empty() || name.chars().next().is_some_and(char::is_uppercase) {
                    break;
                }
                path.push(name.clone());
                if name.len() != seg.len() {
                    break;
                }
            }
            // The longest prefix that is a module.
            while !path.is_empty() {
                let candidate = path.join("::");
                if modules.contains(&candidate) {
                    if candidate != module {
                        found.insert(candidate);
                    }
                    break;
                }
                path.pop();
            }
        }
    }
    found
}

fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = fs::read_to_string(file).expect("read source");
        let code = code(&text);
        edges.insert(module.clone(), references(&module, &code, &modules));
        texts.insert(module, code);
    }
    (edges, texts)
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let (edges, _) = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(r) = rank(from) else { continue };
        for to in tos {
            if let Some(t) = rank(to)
                && t > r
            {
                wrong.push(format!("{from} uses {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a lower layer uses a higher one:\n{}",
        wrong.join("\n")
    );
    // The check sees real references: the command line uses the front-ends.
    assert!(edges["cli"].iter().any(|m| m.starts_with("front")));
}

#[test]
fn no_two_modules_import_each_other_even_indirectly() {
    let (edges, _) = graph();
    // Depth-first search for a back edge; the path is the cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        path.push(m.to_owned());
        for n in edges.get(m).into_iter().flatten() {
            // A parent module's `pub mod` / `pub use` of its children is not an import
            // of them in the sense of a cycle: children may use their parent's items.
            if n.starts_with(&format!("{m}::")) {
                continue;
            }
            match state.get(n.as_str()) {
                Some(1) => {
                    let at = path.iter().position(|p| p == n).unwrap_or(0);
                    let mut cycle = path[at..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(n, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if !state.contains_key(m.as_str()) {
            let cycle = visit(m, &edges, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" → ")
            );
        }
    }
}

#[test]
fn only_the_command_line_knows_clap() {
    let (_, texts) = graph();
    let users: Vec<&String> = texts
        .iter()
        .filter(|(m, code)| !m.starts_with("cli") && *m != "main" && code.contains("clap"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        users.is_empty(),
        "clap used below the command line: {users:?}"
    );
}
