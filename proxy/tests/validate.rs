//! `infra-proxy validate`: the real binary's output and exit codes.

use std::process::Command;

fn validate(policy: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "infra-validate-{}-{}",
        std::process::id(),
        policy.len()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).expect("write policy");
    let mut command = Command::new(env!("CARGO_BIN_EXE_infra-proxy"));
    command.arg("validate").arg("--policy").arg(&path);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("infra-proxy runs");
    std::fs::remove_dir_all(&dir).ok();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "policy.yaml"),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "policy.yaml"),
    )
}

#[test]
fn a_valid_file_prints_a_summary_and_exits_0() {
    let example = include_str!("../../examples/policy.yaml");
    let (code, stdout, stderr) = validate(
        example,
        &[
            ("INFRA_ADMIN_PASSWORD", "a-long-enough-password"),
            ("OKTA_CLIENT_SECRET", "okta-secret"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "policy.yaml: 3 grants, 1 provider, 1 user, 1 group\n"
    );
    assert_eq!(stderr, "");
}

#[test]
fn errors_are_all_printed_with_their_place_and_exit_1() {
    let (code, stdout, stderr) = validate(
        "grants:\n  - user: carl@example.com\n    role: \"\"\n    resource: Prod\n  - group: system:masters\n    role: view\n    resource: production\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "policy.yaml:3:11: grants[0].role: role \"\" is not a valid role name: it is empty\n\
         policy.yaml:4:15: grants[0].resource: resource \"Prod\" is not `<destination>` or `<destination>.<namespace>`: destination \"Prod\" may contain only lower-case letters, digits and `-`\n\
         policy.yaml:5:12: grants[1].group: \"system:masters\" starts with `system:`, which is reserved for Kubernetes\n"
    );
}

#[test]
fn a_secret_that_cannot_be_resolved_is_named_not_shown() {
    let (code, _, stderr) = validate(
        "users:\n  - name: admin@example.com\n    password: env:INFRA_TEST_UNSET_PASSWORD\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("policy.yaml:3:15: users[0].password: environment variable \"INFRA_TEST_UNSET_PASSWORD\" is not set"),
        "{stderr}"
    );
}
