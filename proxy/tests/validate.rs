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

/// The README's two `validate` transcripts, run in a folder holding the README's `infra.yaml`
/// and `broken.yaml`: the same output, line for line, and the same exit code.
#[test]
fn the_readme_validate_transcripts_run_as_written() {
    let readme = include_str!("../../README.md");
    let yaml_after = |marker: &str| -> String {
        let rest = &readme[readme.find(marker).expect("the README's marker") + marker.len()..];
        let rest = &rest[rest.find("```yaml\n").expect("a yaml block") + 8..];
        rest[..rest.find("```").expect("the block's end")].to_owned()
    };
    let console_with = |marker: &str| -> String {
        readme
            .split("```console\n")
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .find(|block| block.contains(marker))
            .expect("a console block")
            .to_owned()
    };
    let dir = std::env::temp_dir().join(format!("infra-readme-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("infra.yaml"),
        yaml_after("**1. Write a policy file**"),
    )
    .expect("write");
    std::fs::write(
        dir.join("broken.yaml"),
        yaml_after("With this `broken.yaml`:"),
    )
    .expect("write");
    for marker in [
        "$ target/release/infra-proxy validate --policy infra.yaml",
        "$ infra-proxy validate --policy broken.yaml",
    ] {
        let block = console_with(marker);
        let mut lines = block.lines();
        let command = lines
            .next()
            .and_then(|l| l.strip_prefix("$ "))
            .expect("a command");
        let file = command
            .split_whitespace()
            .map(|w| w.trim_end_matches(';'))
            .find(|w| {
                std::path::Path::new(w)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("yaml"))
            })
            .expect("a policy file");
        let out = Command::new(env!("CARGO_BIN_EXE_infra-proxy"))
            .args(["validate", "--policy", file])
            .current_dir(&dir)
            .output()
            .expect("infra-proxy runs");
        let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
        if command.contains("echo \"exit $?\"") {
            printed.push_str("exit ");
            printed.push_str(&out.status.code().unwrap_or(-1).to_string());
            printed.push('\n');
        } else {
            assert!(out.status.success(), "{printed}");
        }
        let expected: String = lines.flat_map(|l| [l, "\n"]).collect();
        assert_eq!(printed, expected, "`{command}`");
    }
    std::fs::remove_dir_all(&dir).ok();
}
