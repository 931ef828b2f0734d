//! helm lint --strict and valid, locked-down objects in every mode.

use crate::{
    MODES, assert_locked_down, assert_valid_objects, chart, env, helm, kinds, objects, push_sets,
    template, text,
};

#[test]
fn lint_strict_passes_in_every_mode() {
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    for sets in MODES.iter().map(|(_, sets)| sets) {
        let mut args = vec!["lint".to_owned(), "--strict".to_owned(), chart.to_owned()];
        push_sets(&mut args, sets);
        let output = helm(&args);
        assert!(
            output.status.success(),
            "helm lint --strict {sets:?} failed:\n{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}

#[test]
fn every_mode_renders_valid_locked_down_objects() {
    for (mode, sets) in MODES {
        let objects = objects(&template(sets));
        assert!(!objects.is_empty(), "{mode}: nothing rendered");
        assert_valid_objects(&objects);
        assert_locked_down(&objects);
        let env = env(&objects);
        assert_eq!(env["INFRA_DESTINATION"], "kubernetes", "{mode}");
        let kinds = kinds(&objects);
        for always in [
            "Deployment",
            "Service",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(always), "{mode}: no {always} in {kinds:?}");
        }
    }
}
