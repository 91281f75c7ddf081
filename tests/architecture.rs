//! The shape of the source tree, checked: no import circle between files,
//! and no source file past the size that asks for a split along a seam.
//!
//! Modules import downwards: `http` and the TLS state machines know nothing
//! of the proxy or the runtime, so they can be tested byte by byte. A circle
//! between two files means neither can be understood, tested or moved
//! without the other. This test reads `src/` as text, finds every module
//! path each file names (`crate::a::b`, `super::x`, a child module's
//! `child::y`), maps it to the file that defines it, and fails on any cycle,
//! naming the files and what ties them. A file naming its own ancestor
//! module (`use super::Config` in `config/build.rs`) is how Rust files use
//! their parent's types and does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn no_import_circle_between_source_files() {
    let files = source_files();
    let graph = import_graph(&files);
    let cycles = find_cycles(&graph);
    if !cycles.is_empty() {
        let mut msg = String::from("import circles between source files:\n");
        for cycle in cycles {
            msg.push_str(&format!("  {}\n", cycle.join(" -> ")));
        }
        panic!("{msg}");
    }
}

/// Lines past which a file under src/ must be split along a seam.
const MAX_LINES: usize = 650;

#[test]
fn no_source_file_is_past_the_split_size() {
    let mut too_long = Vec::new();
    for (module, path) in source_files() {
        let lines = fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines > MAX_LINES {
            too_long.push(format!("{} ({module}): {lines} lines", path.display()));
        }
    }
    assert!(
        too_long.is_empty(),
        "split these along a seam (at most {MAX_LINES} lines):\n  {}",
        too_long.join("\n  ")
    );
}

#[test]
fn the_checker_sees_a_circle_and_ignores_a_parent() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    let cycles = find_cycles(&graph);
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].len(), 4, "{cycles:?}");
    let refs = references(
        "use super::{field::Field, names};\nuse crate::http::host::{normalize, X};\n// crate::ignored\nlet s = \"crate::not_code\";\nchild::f();",
    );
    assert!(refs.contains(&vec!["super".into(), "field".into(), "Field".into()]));
    assert!(refs.contains(&vec!["super".into(), "names".into()]));
    assert!(refs.contains(&vec![
        "crate".into(),
        "http".into(),
        "host".into(),
        "normalize".into()
    ]));
    assert!(!refs.iter().any(|r| r.contains(&"ignored".to_string())));
    assert!(!refs.iter().any(|r| r.contains(&"not_code".to_string())));
    assert!(refs.contains(&vec!["child".into(), "f".into()]));
}

/// (module path like `crate::tls::stream`, file) for every `.rs` under src/.
fn source_files() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&src, &src, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts
                .last()
                .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
            {
                parts.pop();
            }
            let module = std::iter::once("crate".to_string())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            out.push((module, path));
        }
    }
}

/// module -> modules it names, with ancestors left out.
fn import_graph(files: &[(String, PathBuf)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = files.iter().map(|(m, _)| m.as_str()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files {
        if module == "crate" {
            continue; // lib.rs and main.rs only declare and dispatch
        }
        let text = fs::read_to_string(path).unwrap_or_default();
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        let own: Vec<&str> = module.split("::").collect();
        // `super` is the parent module, whichever file defines this one.
        let base_for_super: Vec<&str> = own[..own.len().saturating_sub(1)].to_vec();
        for r in references(text) {
            let absolute: Vec<String> = match r.first().map(String::as_str) {
                Some("crate") => r.clone(),
                Some("super") => {
                    let mut base: Vec<String> =
                        base_for_super.iter().map(|s| s.to_string()).collect();
                    let mut rest = &r[1..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.into_iter().chain(rest.iter().cloned()).collect()
                }
                Some("self") => own
                    .iter()
                    .map(|s| s.to_string())
                    .chain(r[1..].iter().cloned())
                    .collect(),
                Some(first) => {
                    // `child::x` in a module that declares `mod child;`
                    let candidate = format!("{module}::{first}");
                    if !modules.contains(candidate.as_str()) {
                        continue;
                    }
                    own.iter()
                        .map(|s| s.to_string())
                        .chain(r.iter().cloned())
                        .collect()
                }
                None => continue,
            };
            // The longest prefix that is a module of its own file.
            let target = (1..=absolute.len())
                .rev()
                .map(|n| absolute[..n].join("::"))
                .find(|m| modules.contains(m.as_str()));
            let Some(target) = target else { continue };
            let is_ancestor_or_self =
                module == &target || module.starts_with(&format!("{target}::"));
            if !is_ancestor_or_self && target != "crate" {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// Every path that starts with an identifier followed by `::`, outside
/// comments and string literals, with `{a, b::c}` groups expanded one level.
fn references(text: &str) -> Vec<Vec<String>> {
    let code = strip_comments_and_strings(text);
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_ident = (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':'));
        if !starts_ident {
            i += 1;
            continue;
        }
        let (path, end) = read_path(&code, i);
        if path.len() >= 2 || code[end..].starts_with("::{") {
            if code[end..].starts_with("::{") {
                let group_start = end + 3;
                let group_end = matching_brace(&code, group_start - 1).unwrap_or(code.len());
                for item in split_top_level(&code[group_start..group_end]) {
                    let item = item.trim();
                    if item.is_empty() || item == "self" {
                        out.push(path.clone());
                        continue;
                    }
                    let (sub, _) = read_path(item, 0);
                    let mut full = path.clone();
                    full.extend(sub);
                    out.push(full);
                }
                i = group_end;
                continue;
            }
            out.push(path);
        }
        i = end.max(i + 1);
    }
    out
}

fn read_path(code: &str, start: usize) -> (Vec<String>, usize) {
    let bytes = code.as_bytes();
    let mut segs = Vec::new();
    let mut i = start;
    loop {
        let s = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if s == i {
            break;
        }
        segs.push(code[s..i].to_string());
        if code[i..].starts_with("::")
            && code[i + 2..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            i += 2;
        } else {
            break;
        }
    }
    (segs, i)
}

fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Comments and string/char literals replaced by spaces (lengths kept).
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                out.push(b' ');
                i += 1;
            }
            out.extend_from_slice(b"  ");
            i += 2;
        } else if b[i] == b'"'
            || (b[i] == b'r' && b.get(i + 1).is_some_and(|c| *c == b'"' || *c == b'#'))
        {
            // String literal (raw strings with any number of #).
            let mut hashes = 0;
            let raw = b[i] == b'r';
            if raw {
                out.push(b' ');
                i += 1;
                while b.get(i) == Some(&b'#') {
                    hashes += 1;
                    out.push(b' ');
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
            while i < b.len() {
                if !raw && b[i] == b'\\' {
                    out.extend_from_slice(b"  ");
                    i += 2;
                    continue;
                }
                if b[i] == b'"'
                    && b[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|c| **c == b'#')
                        .count()
                        == hashes
                {
                    out.resize(out.len() + 1 + hashes, b' ');
                    i += 1 + hashes;
                    break;
                }
                out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                i += 1;
            }
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.extend_from_slice(b"   ");
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Each elementary cycle found by a depth-first search, once per set of files.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut seen_sets: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![start.clone()];
        dfs(graph, start, &mut stack, &mut seen_sets, &mut cycles);
    }
    cycles
}

fn dfs(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    stack: &mut Vec<String>,
    seen_sets: &mut BTreeSet<BTreeSet<String>>,
    cycles: &mut Vec<Vec<String>>,
) {
    let Some(last) = stack.last().cloned() else {
        return;
    };
    if stack.len() > 12 {
        return;
    }
    for next in graph.get(&last).into_iter().flatten() {
        if next == start {
            let set: BTreeSet<String> = stack.iter().cloned().collect();
            if seen_sets.insert(set) {
                let mut c = stack.clone();
                c.push(start.to_string());
                cycles.push(c);
            }
        } else if !stack.contains(next) {
            stack.push(next.clone());
            dfs(graph, start, stack, seen_sets, cycles);
            stack.pop();
        }
    }
}
