//! The rule of `src/lib.rs`, checked: a module imports only modules declared after it there, so
//! imports point down the stack and no two modules need each other. And what some modules must
//! never do: `verify` is pure (no tokio, no I/O, no configuration), `telemetry` is a leaf, the store
//! knows no front end, and `loadgen` does not build on test helpers. Test code is exempt.
//!
//! `cargo test --test architecture -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules, in the order `src/lib.rs` declares them.
fn declared() -> Vec<String> {
    std::fs::read_to_string(src().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// Every `.rs` file of a top-level module, with whether `super::` in it means the crate root.
fn files(module: &str) -> Vec<(PathBuf, bool)> {
    let single = src().join(format!("{module}.rs"));
    let mut out = Vec::new();
    if single.exists() {
        out.push((single, true));
    }
    let dir = src().join(module);
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let root_super = p.parent() == Some(dir.as_path()) && p.ends_with("mod.rs");
                out.push((p, root_super));
            }
        }
    }
    out
}

/// A file's code without comments and without its test code (`tests.rs` and `*_tests.rs` files,
/// and an inline `#[cfg(test)] mod ... {` to the end of the file, where the tests sit).
fn code(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("#[cfg(test)]") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            if next.starts_with("mod ") && next.ends_with('{') {
                break;
            }
            i += 2;
            continue;
        }
        out.push_str(strip_comment(lines[i]));
        out.push('\n');
        i += 1;
    }
    out
}

/// The line up to a `//` that is not inside a string literal.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level names `code` reaches through `crate::` (and `super::` where that is the root):
/// `crate::a::b`, and each item of `crate::{a, b::c}`.
fn referenced(code: &str, root_super: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if root_super {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            // `some_crate::` or `_super::`: not this crate.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            item_start = false;
                            out.insert(ident(&group[i..]).to_string());
                        }
                        _ => {}
                    }
                }
            } else {
                out.insert(ident(rest).to_string());
            }
        }
    }
    out
}

/// Module -> the top-level modules it imports.
fn graph() -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
    let modules = declared();
    let known: BTreeSet<&String> = modules.iter().collect();
    let mut g = BTreeMap::new();
    for m in &modules {
        let mut uses = BTreeSet::new();
        for (file, root_super) in files(m) {
            for r in referenced(&code(&file), root_super) {
                if known.contains(&r) && r != *m {
                    uses.insert(r);
                }
            }
        }
        g.insert(m.clone(), uses);
    }
    (modules, g)
}

#[test]
fn every_module_is_declared_in_lib_rs() {
    let modules: BTreeSet<String> = declared().into_iter().collect();
    for e in std::fs::read_dir(src()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        let is_module = (p.is_dir() && p.join("mod.rs").exists())
            || (p.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main");
        if is_module {
            assert!(modules.contains(&name), "src/{name} is not in src/lib.rs");
        }
    }
}

#[test]
fn imports_point_down_the_list_of_src_lib_rs() {
    let (order, g) = graph();
    let position: BTreeMap<&String, usize> =
        order.iter().enumerate().map(|(i, m)| (m, i)).collect();
    let mut broken = Vec::new();
    for (m, uses) in &g {
        println!(
            "{m:10} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for u in uses {
            if position[u] < position[m] {
                broken.push(format!("{m} imports {u}, which is declared above it"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // What the rule says for the modules named in it, spelled out.
    assert!(
        g["telemetry"].is_empty(),
        "telemetry imports {:?}",
        g["telemetry"]
    );
    for front in ["api", "web"] {
        assert!(!g["store"].contains(front), "the store imports {front}");
    }
    assert!(!g["loadgen"].contains("testkit"));
    assert!(!g["verify"].contains("config"));
}

#[test]
fn verify_is_pure() {
    for (file, _) in files("verify") {
        let code = code(&file);
        for banned in ["tokio", "std::fs", "std::net", "std::io", "std::process"] {
            assert!(
                !code.contains(banned),
                "{} uses {banned}: verdict logic does no I/O",
                file.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = "use crate::{a, b::{c, d}, e};\nlet x = crate::f::g();\nlet y = other_crate::h;\n";
    let found: Vec<String> = referenced(code, false).into_iter().collect();
    assert_eq!(found, ["a", "b", "e", "f"]);
    assert_eq!(
        referenced("use super::{x, y};", true)
            .into_iter()
            .collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert_eq!(
        strip_comment(r#"let u = "http://x"; // crate::no"#),
        r#"let u = "http://x"; "#
    );
}
