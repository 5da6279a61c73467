//! Hygiene that runs itself: the layer order of ARCHITECTURE.md holds in every import, no
//! room imports a sibling that imports it back, every file says what it owns, no file passes
//! 600 lines, and nothing left over from debugging or a shortcut to the exit code remains.
//! Reads the sources as text; never builds or runs anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a source file under `engine/src` or `watcher/src` may have.
const MAX_LINES: usize = 600;
/// The most bytes ARCHITECTURE.md may have: a map, not a book.
const MAX_ARCHITECTURE_BYTES: usize = 15 * 1024;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

fn checked_dirs() -> Vec<PathBuf> {
    let root = workspace();
    [
        "engine/src",
        "engine/tests",
        "watcher/src",
        "watcher/tests",
        "fuzz/fuzz_targets",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|d| d.is_dir())
    .collect()
}

fn shown(path: &Path) -> String {
    let root = workspace().canonicalize().unwrap();
    let path = path.canonicalize().unwrap();
    path.strip_prefix(&root).unwrap_or(&path).display().to_string()
}

#[test]
fn every_file_says_what_it_owns() {
    let mut missing = Vec::new();
    for dir in checked_dirs() {
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.starts_with("//!") {
                missing.push(shown(&file));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files that do not open with a `//!` sentence: {missing:#?}"
    );
}

#[test]
fn no_debugging_leftovers_and_one_exit() {
    let mut found = Vec::new();
    let forbidden = [
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    for dir in checked_dirs() {
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let is_main = file.file_name().is_some_and(|n| n == "main.rs");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in forbidden {
                    if code.contains(word) {
                        found.push(format!("{}:{}: {word}", shown(&file), n + 1));
                    }
                }
                if !is_main && code.contains(concat!("process::", "exit")) {
                    found.push(format!("{}:{}: exit outside main.rs", shown(&file), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "forbidden in the sources: {found:#?}");
}

#[test]
fn no_source_file_passes_the_limit() {
    let mut long = Vec::new();
    for dir in ["engine/src", "watcher/src"] {
        for file in rust_files(&workspace().join(dir)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_LINES {
                long.push(format!("{}: {lines} lines", shown(&file)));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by concept): {long:#?}"
    );
}

#[test]
fn architecture_is_a_map() {
    let bytes = std::fs::metadata(workspace().join("ARCHITECTURE.md")).unwrap().len() as usize;
    assert!(
        bytes <= MAX_ARCHITECTURE_BYTES,
        "ARCHITECTURE.md is {bytes} bytes, more than {MAX_ARCHITECTURE_BYTES}: move choices to docs/decisions.md"
    );
}

/// The ```` ```layers ```` block of ARCHITECTURE.md: for each crate, its top-level modules from
/// the highest layer to the lowest, one layer per line.
fn layers() -> BTreeMap<String, Vec<Vec<String>>> {
    let text = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    let mut crates: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for line in block.lines() {
        let line = line.split('#').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let name = line.trim().trim_end_matches(':').to_string();
            crates.insert(name.clone(), Vec::new());
            current = Some(name);
            continue;
        }
        let name = current.as_ref().expect("a layer line belongs to a crate");
        let layer = line.split_whitespace().map(str::to_string).collect();
        crates.get_mut(name).unwrap().push(layer);
    }
    crates
}

/// Module path of a source file relative to its crate's `src`: `runs/gates.rs` is
/// `["runs", "gates"]`, `runs/mod.rs` is `["runs"]`, `lib.rs` is `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The source without comments and without the trailing `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `prefix` (`crate::` or `super::`), with use-groups expanded:
/// `crate::{a::X, b}` gives `a::X` and `b`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let start = from + i;
        from = start + prefix.len();
        let before = start.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        expand(&code[from..], String::new(), &mut out);
    }
    out
}

fn expand(rest: &str, base: String, out: &mut Vec<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(item.trim_start(), base.clone(), out);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        if !item.trim().is_empty() {
            expand(item.trim_start(), base, out);
        }
        return;
    }
    let path: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
        .collect();
    if let Some(i) = path.find('{') {
        let head = path[..i].trim_end_matches(':');
        expand(&rest[i..], format!("{base}{head}::"), out);
    } else {
        out.push(format!("{base}{}", path.trim_end_matches(':')));
    }
}

/// `pub use module::{A, B}` lines of a crate root: root names that stand for a module's item.
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in root.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let mut paths = Vec::new();
        expand(rest.trim_end_matches(';'), String::new(), &mut paths);
        for p in paths {
            if let Some((module, _)) = p.split_once("::") {
                let name = p.rsplit("::").next().unwrap().to_string();
                map.insert(name, module.to_string());
            }
        }
    }
    map
}

struct Crate {
    name: &'static str,
    src: PathBuf,
}

#[test]
fn imports_run_down_the_layers_and_siblings_do_not_loop() {
    let layers = layers();
    let crates = [
        Crate {
            name: "engine",
            src: workspace().join("engine/src"),
        },
        Crate {
            name: "watcher",
            src: workspace().join("watcher/src"),
        },
    ];
    let mut problems = Vec::new();
    for krate in &crates {
        let order = layers
            .get(krate.name)
            .unwrap_or_else(|| panic!("ARCHITECTURE.md's layers name no crate `{}`", krate.name));
        let mut rank = BTreeMap::new();
        for (i, layer) in order.iter().enumerate() {
            for m in layer {
                rank.insert(m.clone(), order.len() - i);
            }
        }
        let root_file = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| krate.src.join(f))
            .find(|p| p.exists())
            .unwrap();
        let reexports = root_reexports(&std::fs::read_to_string(&root_file).unwrap());
        let files = rust_files(&krate.src);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&krate.src, f)).collect();
        let tops: BTreeSet<&String> = modules.iter().filter_map(|m| m.first()).collect();
        for top in &tops {
            if !rank.contains_key(*top) && top.as_str() != "main" {
                problems.push(format!(
                    "{}: module `{top}` is in no layer of ARCHITECTURE.md",
                    krate.name
                ));
            }
        }
        // Edges between sibling rooms, for the cycle check.
        let mut siblings: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for file in &files {
            let me = module_of(&krate.src, file);
            if me.is_empty() {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            let mut targets: Vec<Vec<String>> = Vec::new();
            for p in paths_after(&code, "crate::") {
                let parts: Vec<String> = p.split("::").map(str::to_string).collect();
                targets.push(parts);
            }
            for p in paths_after(&code, "super::") {
                let mut parts: Vec<String> = me.clone();
                // A file's `super` is its parent module; `mod.rs` is already its own module.
                parts.pop();
                parts.extend(p.split("::").filter(|s| *s != "super").map(str::to_string));
                targets.push(parts);
            }
            for target in targets {
                let Some(first) = target.first().filter(|f| !f.is_empty()) else {
                    continue;
                };
                let top = if modules.iter().any(|m| m.first() == Some(first)) {
                    first.clone()
                } else if let Some(module) = reexports.get(first) {
                    module.clone()
                } else if first.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && target.len() == 1 {
                    problems.push(format!(
                        "{}: reaches `crate::{first}` of the crate root; import it from the module that owns it",
                        shown(file)
                    ));
                    continue;
                } else {
                    continue;
                };
                if top != me[0] {
                    let (Some(from), Some(to)) = (rank.get(&me[0]), rank.get(&top)) else {
                        continue;
                    };
                    if to >= from {
                        problems.push(format!(
                            "{}: `{}` imports `{top}`, which is not in a lower layer",
                            shown(file),
                            me[0]
                        ));
                    }
                    continue;
                }
                // Same top-level module: a sibling edge if both are distinct children of one parent.
                let target_module = (1..=target.len())
                    .rev()
                    .map(|n| target[..n].to_vec())
                    .find(|m| modules.contains(m));
                let Some(target_module) = target_module else { continue };
                let common = me.iter().zip(&target_module).take_while(|(a, b)| a == b).count();
                if common < me.len() && common < target_module.len() {
                    let from = me[..=common].to_vec();
                    let to = target_module[..=common].to_vec();
                    siblings.entry(from).or_default().insert(to);
                }
            }
        }
        for cycle in cycles(&siblings) {
            problems.push(format!("{}: rooms import each other: {}", krate.name, cycle));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "layer order broken:\n{}", problems.join("\n"));
}

/// Each cycle of the sibling graph, written `a::b → a::c → a::b`.
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    let min = names.iter().enumerate().min_by_key(|(_, n)| n.to_string()).unwrap().0;
                    names.rotate_left(min);
                    let first = names[0].clone();
                    names.push(first);
                    found.insert(names.join(" → "));
                } else if !path.contains(next) && path.len() < 8 {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    // The checker itself: a group import and a `super` path are both found.
    let code = "use crate::{event::Event, exec::{a, b::C}};\nuse super::lifecycle::Environment;";
    let crate_paths = paths_after(code, "crate::");
    assert_eq!(crate_paths, vec!["event::Event", "exec::a", "exec::b::C"]);
    assert_eq!(paths_after(code, "super::"), vec!["lifecycle::Environment"]);
    let mut graph = BTreeMap::new();
    let a = vec!["runs".to_string(), "a".to_string()];
    let b = vec!["runs".to_string(), "b".to_string()];
    graph.insert(a.clone(), BTreeSet::from([b.clone()]));
    graph.insert(b, BTreeSet::from([a]));
    assert_eq!(cycles(&graph), vec!["runs::a → runs::b → runs::a"]);
}
