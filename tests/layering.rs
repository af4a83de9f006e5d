//! The code map's layering, as rules the source must keep (ARCHITECTURE.md, "Code map"):
//! modules are ordered from the bottom up, and a module may use only modules below it; no module
//! outside `store::sqlite` names `rusqlite`; inside `provider`, the dialects and the tap do not
//! name each other. This reads the source files themselves (non-test code only), so a new
//! import that breaks a rule fails here, naming the file and the line.

use std::path::{Path, PathBuf};

/// The top-level modules, from the bottom up. A module may use the ones before it.
const ORDER: &[&str] = &[
    "usage",
    "calendar",
    "secret",
    "stream",
    "pricing",
    "provider",
    "plan",
    "auth",
    "fuzzing",
    "file_watch",
    "tls",
    "config",
    "telemetry",
    "quota",
    "store",
    "error",
    "meter",
    "metrics",
    "access_log",
    "upstream",
    "proxy",
    "reload",
    "alerts",
    "admin",
    "serve",
    "demo",
    "main",
];

/// Files inside a module that must not name a sibling (file stem → stems it must not use).
const SIBLING_RULES: &[(&str, &[&str], &[&str])] = &[
    // (directory, files, forbidden sibling modules)
    ("provider", &["tap"], &["openai", "gemini"]),
    ("provider", &["openai", "gemini"], &["tap"]),
];

/// A broken rule: where, and what.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    rule: String,
}

/// The top-level module of a source file (`src/store/sqlite/writer.rs` → `store`).
fn module_of(rel: &Path) -> Option<String> {
    let mut parts = rel.iter().map(|p| p.to_string_lossy().into_owned());
    let first = parts.next()?;
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The source without its test modules: everything from the first `#[cfg(test)]` at the start
/// of a line (the crate keeps its unit tests at the end of a file, or in `tests.rs` files).
fn non_test(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The crate modules a line names: `crate::x`, `super::super::x` does not leave the module,
/// `tollgate::x` in the binary.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["crate::", "tollgate::"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            // `crate::{a, b::c}`: every name in the braces.
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            rest = after;
        }
    }
    out
}

/// Whether a line is code (not a comment, not inside a doc example the compiler skips).
fn is_code(line: &str) -> bool {
    let t = line.trim_start();
    !(t.starts_with("//") || t.starts_with("*") || t.starts_with("/*"))
}

/// Check one file's non-test source, `rel` being its path under `src/`.
fn check_source(rel: &Path, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(module) = module_of(rel) else {
        return out;
    };
    let file = rel.display().to_string();
    let rank = ORDER.iter().position(|m| *m == module);
    let in_sqlite = rel.starts_with("store/sqlite");
    let stem = rel
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = rel
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if rank.is_none() {
        out.push(Violation {
            file: file.clone(),
            line: 0,
            rule: format!("module `{module}` is not in the code map's order"),
        });
    }
    for (n, line) in non_test(text).lines().enumerate() {
        if !is_code(line) {
            continue;
        }
        let line_no = n + 1;
        if !in_sqlite && line.contains("rusqlite") {
            out.push(Violation {
                file: file.clone(),
                line: line_no,
                rule: "only store::sqlite may name rusqlite".into(),
            });
        }
        for used in named_modules(line) {
            if used == module {
                continue;
            }
            let Some(used_rank) = ORDER.iter().position(|m| *m == used) else {
                continue;
            };
            if rank.is_some_and(|r| used_rank >= r) {
                out.push(Violation {
                    file: file.clone(),
                    line: line_no,
                    rule: format!("`{module}` must not use `{used}` (above it in the code map)"),
                });
            }
        }
        for (dir, files, forbidden) in SIBLING_RULES {
            if parent == *dir && files.contains(&stem.as_str()) {
                for sibling in *forbidden {
                    let named = line.contains(&format!("super::{sibling}"))
                        || line.contains(&format!("{dir}::{sibling}"))
                        || (line.contains("use super::{")
                            && line.split(['{', ',', '}', ' ']).any(|w| w == *sibling));
                    if named {
                        out.push(Violation {
                            file: file.clone(),
                            line: line_no,
                            rule: format!("`{dir}::{stem}` must not use `{dir}::{sibling}`"),
                        });
                    }
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 30, "found the source: {}", files.len());
    let mut violations = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read a source file");
        let rel = path.strip_prefix(&src).expect("under src");
        violations.extend(check_source(rel, &text));
    }
    assert!(
        violations.is_empty(),
        "the code map's layering is broken:\n{}",
        violations
            .iter()
            .map(|v| format!("  src/{}:{}: {}", v.file, v.line, v.rule))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_rules_catch_what_they_forbid() {
    let check = |path: &str, text: &str| check_source(Path::new(path), text);
    // A database crate in the ledger.
    let v = check("quota.rs", "use rusqlite::Connection;\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].rule.contains("rusqlite"));
    // An arrow up, in each form an import takes.
    for line in [
        "use crate::proxy::Proxy;",
        "use crate::{config::Config, serve::Running};",
        "let x = crate::admin::start(h);",
    ] {
        let v = check("quota.rs", &format!("{line}\n"));
        assert_eq!(v.len(), 1, "{line}: {v:?}");
    }
    // Down is fine, and so are comments and the test module.
    assert!(check("proxy/mod.rs", "use crate::quota::{Hold, Ledger};\n").is_empty());
    assert!(check("quota.rs", "// crate::proxy calls this\n").is_empty());
    assert!(
        check(
            "quota.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests { use crate::serve::Running; }\n"
        )
        .is_empty()
    );
    // Inside the store, SQLite is at home.
    assert!(check("store/sqlite/writer.rs", "use rusqlite::Connection;\n").is_empty());
    // Siblings in provider.
    assert_eq!(
        check("provider/tap.rs", "use super::{gemini, openai};\n").len(),
        2
    );
    assert_eq!(
        check("provider/openai.rs", "use super::tap::Extract;\n").len(),
        1
    );
    // A module the code map does not know.
    assert_eq!(check("newthing.rs", "\n").len(), 1);
}
