//! The shape of the code, checked (`docs/design.md`, "Rules the tests keep"): no module cycle
//! inside any crate, no source file longer than 700 lines outside its test module, no wire type
//! declared outside `infra-api`, no direct read of the system clock outside the clock, and
//! nothing in the repository that points at files outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a source file may be, outside its trailing `#[cfg(test)]` module.
const MAX_LINES: usize = 700;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The text of `path` before its test module, without comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    text.lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn non_test_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("read a source file")
        .lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .count()
}

/// Identifiers following `prefix` in `text` (`crate::store::x` gives `store` for `crate::`).
fn names_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    text.match_indices(prefix).filter_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &text[at + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

/// The top-level modules of the crate in `src` and the ones each of them uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(src) {
        let relative = path.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a file")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let top = if first == "lib" || first == "main" || first == "bin" {
            continue;
        } else {
            first
        };
        let text = code(&path);
        let mut uses: BTreeSet<String> = names_after(&text, "crate::").collect();
        if relative.components().count() == 1 {
            // In a top-level module file, `super::` is the crate root.
            uses.extend(names_after(&text, "super::"));
        }
        uses.remove(&top);
        graph.entry(top).or_default().extend(uses);
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|name| known.contains(name));
    }
    graph
}

/// A cycle of `graph`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

const CRATES: &[&str] = &[
    "api", "authz", "control", "proxy", "cli", "tests", "benches", "fuzz",
];

#[test]
fn no_crate_has_a_module_cycle() {
    for name in CRATES {
        let graph = module_graph(&workspace().join(name).join("src"));
        assert!(
            graph.len() > 1 || *name == "benches",
            "{name}: found no modules; is the source layout still src/<module>.rs?"
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{name}: modules use each other in a cycle: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("d".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(
        find_cycle(&graph).map(|c| c.len()),
        Some(4),
        "a -> b -> c -> a"
    );
    let acyclic = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn no_source_file_is_longer_than_700_lines_outside_its_tests() {
    let mut long = Vec::new();
    for name in CRATES {
        for dir in ["src", "tests", "benches"] {
            for path in sources(&workspace().join(name).join(dir)) {
                let lines = non_test_lines(&path);
                if lines > MAX_LINES {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by job (at most {MAX_LINES} lines outside the test module):\n{}",
        long.join("\n")
    );
}

#[test]
fn wire_types_are_declared_only_in_infra_api() {
    // The CLI's client and the control plane's HTTP layer speak `infra-api` types; a serde
    // derive there would be a second, hand-written copy of the contract.
    let mut places = vec![workspace().join("cli/src/api.rs")];
    places.extend(sources(&workspace().join("control/src/api")));
    places.push(workspace().join("proxy/src/sync.rs"));
    for path in places {
        let text = code(&path);
        assert!(
            !text.contains("Deserialize)") && !text.contains("Serialize)"),
            "{} derives serde traits: declare the wire type in api/ instead",
            path.display()
        );
    }
}

#[test]
fn the_system_clock_is_read_only_by_the_clock() {
    let allowed = [workspace().join("authz/src/clock.rs")];
    for name in ["api", "authz", "control", "proxy"] {
        for path in sources(&workspace().join(name).join("src")) {
            if allowed.contains(&path) {
                continue;
            }
            let text = code(&path);
            assert!(
                !text.contains("SystemTime::now()"),
                "{} reads the system clock directly; take an infra_authz::clock::Clock",
                path.display()
            );
        }
    }
}

#[test]
fn the_repository_points_at_no_file_outside_it() {
    let mut files = vec![
        workspace().join("README.md"),
        workspace().join("Cargo.toml"),
    ];
    files.extend(
        std::fs::read_dir(workspace().join("docs"))
            .expect("docs/")
            .flatten()
            .map(|e| e.path()),
    );
    for name in CRATES {
        files.extend(sources(&workspace().join(name).join("src")));
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for outside in [
            "../shared",
            "shared folder",
            "DESIGN.md",
            "DEPENDENCIES.md",
            "STYLE.md",
        ] {
            assert!(
                !text.contains(outside),
                "{} mentions {outside:?}, which is not in the repository",
                path.display()
            );
        }
    }
}
