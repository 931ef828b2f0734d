//! The default rendering against its snapshot.

use crate::{GENERATED, repo_root, template};

/// The rendered default, with the generated Secret values (random on every render) replaced by
/// a placeholder.
fn normalized_default() -> String {
    let rendered = template(&[]);
    let mut out = String::new();
    let mut in_secret = false;
    let mut in_data = false;
    for line in rendered.lines() {
        if line == "---" {
            in_secret = false;
            in_data = false;
        } else if line == "kind: Secret" {
            in_secret = true;
        } else if !line.starts_with(' ') {
            in_data = in_secret && line == "data:";
        } else if in_data && let Some((key, _)) = line.split_once(": ") {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(GENERATED);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn default_rendering_matches_the_snapshot() {
    let snapshot = repo_root().join("tests/helm/snapshots/default.yaml");
    let rendered = normalized_default();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().expect("a parent folder"))
            .expect("create the snapshots folder");
        std::fs::write(&snapshot, &rendered).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test -p infra-tests --test helm",
            snapshot.display()
        )
    });
    if expected != rendered {
        let line = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(rendered.lines().count()));
        panic!(
            "the default rendering of charts/infra differs from {} from line {}:\n\
             snapshot: {:?}\nrendered: {:?}\n\
             If the change is meant, update the snapshot with \
             UPDATE_SNAPSHOTS=1 cargo test -p infra-tests --test helm and commit it.",
            snapshot.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            rendered.lines().nth(line).unwrap_or("<end>"),
        );
    }
}
