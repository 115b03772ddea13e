//! Invariants of the code's shape that a reviewer would otherwise have to re-check by eye
//! (ARCHITECTURE.md): the layer map is true (no module uses one above it, every module has a
//! place), no import circle among either crate's top-level modules, and no close code number
//! written outside the library's `protocol` and `reject` modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

/// Every `.rs` file under `dir`, with its text up to its unit tests.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            out.push((path, code.to_owned()));
        }
    }
    out
}

/// Top-level module → the top-level modules it names through `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources(src) {
        let rel = path.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(node) = path.last().cloned() else {
            return false;
        };
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_circles_among_modules() {
    for krate in ["wsgate", "wsgate-server"] {
        let graph = module_graph(&crate_src(krate));
        assert!(graph.len() > 5, "{krate}: modules found");
        for module in graph.keys() {
            if let Some(cycle) = cycle_from(&graph, module) {
                panic!("{krate}: import circle {}", cycle.join(" → "));
            }
        }
    }
}

/// ARCHITECTURE.md's layers, bottom first: a module may use its own layer and those before.
const LIBRARY_LAYERS: &[&[&str]] = &[
    &["permissions"],
    &["protocol"],
    &["reject"],
    &[
        "source",
        "forwarded",
        "limits",
        "slots",
        "attempts",
        "metrics",
        "outbox",
        "trace",
    ],
    &["identity"],
    &["verify"],
    &["registry", "revocation", "tickets"],
    &["observe"],
    &["revalidate"],
    &["authenticator"],
    &["relay"],
    &["session"],
    &["extract"],
];
const SERVER_LAYERS: &[&[&str]] = &[
    &[
        "config",
        "wire",
        "broker",
        "notify",
        "log_writer",
        "log_format",
    ],
    &["store"],
    &["auth", "keys", "revoke", "listener", "shutdown"],
    &["cluster"],
    &["events", "telemetry"],
    &["endpoints", "demo", "browser_client", "handshake_status"],
    &["admin", "ssf"],
    &["gateway"],
    &["reload"],
    &["serve"],
    &["cli"],
];

#[test]
fn the_layer_map_is_true() {
    for (krate, layers) in [("wsgate", LIBRARY_LAYERS), ("wsgate-server", SERVER_LAYERS)] {
        let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
        let graph = module_graph(&crate_src(krate));
        let mut wrong = Vec::new();
        for (module, deps) in &graph {
            let Some(mine) = layer_of(module) else {
                wrong.push(format!(
                    "{module} is in no layer (place it in ARCHITECTURE.md and here)"
                ));
                continue;
            };
            for dep in deps {
                // Names that are not modules (items of lib.rs) have no layer.
                if let Some(theirs) = layer_of(dep)
                    && theirs > mine
                {
                    wrong.push(format!("{module} uses {dep}, a layer above it"));
                }
            }
        }
        assert!(wrong.is_empty(), "{krate}:\n{}", wrong.join("\n"));
    }
}

#[test]
fn close_codes_are_written_in_protocol_and_reject_only() {
    let codes = [
        "1001", "1002", "1003", "1005", "1007", "1008", "1009", "1011", "1013", "1014", "4001",
        "4003", "4029",
    ];
    let allowed = |p: &Path| {
        let p = p.to_string_lossy();
        p.contains("protocol") || p.ends_with("reject.rs")
    };
    let mut found = Vec::new();
    for krate in ["wsgate", "wsgate-server"] {
        for (path, code) in sources(&crate_src(krate)) {
            if allowed(&path) {
                continue;
            }
            for (n, line) in code.lines().enumerate() {
                let words = line.split(|c: char| !c.is_ascii_alphanumeric());
                if let Some(c) = words.into_iter().find(|w| codes.contains(w)) {
                    found.push(format!("{}:{}: {c}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "close codes outside protocol/reject:\n{}",
        found.join("\n")
    );
}
