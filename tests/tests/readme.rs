//! The README's commands, run as written: the curl walkthrough of the control API (only the
//! address of the control API and the admin's password differ, since they are this test's).

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness};

/// The first ```sh block of the README that contains `marker`.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("the README has no sh block with {marker:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_walkthrough_works_as_written() {
    let h = ControlHarness::start("grants: []\n").await;
    let block = readme_block("api=https://127.0.0.1:4443/api");
    let password = block
        .split("\"password\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the README logs in with a password")
        .to_owned();
    let script = block
        .replace("https://127.0.0.1:4443", &h.control_url())
        .replace(&password, ADMIN_PASSWORD);
    let out = tokio::process::Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("{script}\necho\necho \"key=$key\""),
        ])
        .output()
        .await
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key="))
        .unwrap_or_else(|| panic!("no key line in:\n{stdout}\n{stderr}"));
    assert!(
        key.contains('.') && key != "null",
        "the login gave an access key: {stdout}"
    );
    assert!(
        stdout.contains("\"name\":\"okta\""),
        "the provider was made: {stdout}"
    );
    assert!(
        stdout.contains("\"group\":\"Engineering\""),
        "the grant was made: {stdout}"
    );
    let (status, grants) = h
        .call("GET", "/api/grants?group=Engineering", Some(key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(grants["total"], 1, "{grants}");
}
