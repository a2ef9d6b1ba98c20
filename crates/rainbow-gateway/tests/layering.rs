//! The gateway's top-level modules use each other in one direction only.
//!
//! Each module may use only the modules listed before it in [`LAYERS`]
//! (the order `src/lib.rs` documents): data flows transport → hub → backend
//! for what clients send, and api → hub → transport for what the backend
//! pushes, and no two modules import each other. The check reads the source:
//! every `crate::<module>` path outside comments, in every file of a module.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first.
const LAYERS: &[&str] = &[
    "logging",
    "config",
    "signature",
    "metrics",
    "hub",
    "worker",
    "backend",
    "ops",
    "cluster",
    "state",
    "handshake",
    "status",
    "transport",
    "api",
    "demo",
    "server",
];

/// Re-exports at the crate root, and the module they come from.
const REEXPORTS: &[(&str, &str)] = &[
    ("Config", "config"),
    ("ConfigError", "config"),
    ("Settings", "config"),
    ("Server", "server"),
    ("ServerError", "server"),
    ("Gateway", "state"),
];

fn sources(path: &Path, out: &mut Vec<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(std::fs::read_to_string(path).unwrap());
    }
}

/// The top-level modules `module`'s files name.
fn uses(src: &Path, module: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    sources(&src.join(module), &mut files);
    sources(&src.join(format!("{module}.rs")), &mut files);
    assert!(!files.is_empty(), "no source for module {module}");
    let mut used = BTreeSet::new();
    for file in files {
        for line in file.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let name: String =
                    line[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let name = REEXPORTS.iter().find(|(n, _)| *n == name).map_or(name.as_str(), |(_, m)| m).to_string();
                if name != module {
                    used.insert(name);
                }
            }
        }
    }
    used
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';')).collect();
    assert_eq!(declared, LAYERS.iter().copied().collect(), "LAYERS must list every top-level module");
    let mut wrong = Vec::new();
    for (i, module) in LAYERS.iter().enumerate() {
        for used in uses(&src, module) {
            match LAYERS.iter().position(|m| *m == used) {
                Some(j) if j < i => {}
                Some(_) => wrong.push(format!("{module} uses {used}, which is not below it")),
                None => wrong.push(format!("{module} uses crate::{used}, which is no top-level module")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
