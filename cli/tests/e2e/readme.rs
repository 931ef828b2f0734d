//! The README's CLI transcripts ("Grants (admins)" and "See where you may go, and go there"),
//! each command run as written against the control plane and the stand-in apiserver, and each
//! line the transcript shows found in what the command printed (times, which differ from run to
//! run, compared as times).

use infra_tests::control::ControlHarness;
use infra_tests::proxy::DESTINATION;

use crate::{POLICY, Person, Run, SUZIE, SUZIE_PASSWORD, admin_with_suzie};

/// The README's ```console block that contains `marker`: (command, the lines it printed).
fn transcript(marker: &str) -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let block = readme
        .split("```console\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("the README has no console block with {marker:?}"));
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.to_owned(), Vec::new()));
        } else if let Some((_, printed)) = steps.last_mut() {
            printed.push(line.to_owned());
        }
    }
    steps
}

/// A line with its white space collapsed and every time (`2026-11-22T15:29:31Z`,
/// `2026-11-22 15:29:31Z`) replaced by `<time>`.
fn normal(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            let digits_at = |i: usize| w.as_bytes().get(i).is_some_and(u8::is_ascii_digit);
            if w.len() >= 10 && (0..4).all(digits_at) && w.as_bytes().get(4) == Some(&b'-') {
                if w.contains('T') {
                    "<time>".to_owned()
                } else {
                    "<date>".to_owned()
                }
            } else if w.len() >= 8 && w.ends_with('Z') && w.as_bytes().get(2) == Some(&b':') {
                "<clock>".to_owned()
            } else if w.starts_with("https://127.0.0.1:") {
                // The port differs from run to run.
                "<url>".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.join(" ")
}

/// A command line's words; `"..."` quotes one word with spaces.
fn words_of(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    for (i, part) in command.split('"').enumerate() {
        if i % 2 == 1 {
            words.push(part.to_owned());
        } else {
            words.extend(part.split_whitespace().map(str::to_owned));
        }
    }
    words
}

async fn play(person: &Person, steps: &[(String, Vec<String>)]) {
    for (command, printed) in steps {
        let words = words_of(command);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let run: Run = match words.first() {
            Some(&"infra") => person.infra(&words[1..]).await,
            Some(&"kubectl") => person.kubectl(&words[1..]).await,
            other => panic!("a command the test does not know: {other:?}"),
        };
        // A transcript that shows an error shows a command that fails.
        let run = if printed.iter().any(|l| l.starts_with("error:")) {
            assert_ne!(run.code, 0, "`{command}` should fail");
            run
        } else {
            run.ok()
        };
        let got: Vec<String> = run
            .stdout
            .lines()
            .chain(run.stderr.lines())
            .map(normal)
            .collect();
        for line in printed {
            assert!(
                got.contains(&normal(line)),
                "`{command}` did not print {line:?}:\n{}{}",
                run.stdout,
                run.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cli_transcripts_run_as_written() {
    assert_eq!(DESTINATION, "testing", "the README's destination");
    let h = ControlHarness::start(POLICY).await;
    h.standin
        .create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}))
        .expect("a namespace");
    let admin = admin_with_suzie(&h).await;
    admin.infra(&["groups", "add", "Engineering"]).await.ok();
    admin
        .infra(&["groups", "adduser", SUZIE, "Engineering"])
        .await
        .ok();
    play(
        &admin,
        &transcript("$ infra grants add -g Engineering testing --role view"),
    )
    .await;

    // The grant removed at the end of that transcript comes back for the next one.
    admin
        .infra(&[
            "grants",
            "add",
            "-g",
            "Engineering",
            "testing.web",
            "--role",
            "edit",
        ])
        .await
        .ok();
    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    play(&suzie, &transcript("$ infra use testing.web")).await;
}

/// The policy of the README's "Ask for access" section.
const REQUESTS_POLICY: &str = "requests:
  - name: engineering
    group: Engineering
    roles: [view, edit]
    resources: [testing.*]
    maxDuration: 4h
    reviewers:
      group: SRE
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_request_transcripts_run_as_written() {
    let h = ControlHarness::start(REQUESTS_POLICY).await;
    h.standin
        .create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}))
        .expect("a namespace");
    let admin = admin_with_suzie(&h).await;
    for (user, group) in [(SUZIE, "Engineering"), ("admin", "SRE")] {
        admin.infra(&["groups", "add", group]).await.ok();
        admin.infra(&["groups", "adduser", user, group]).await.ok();
    }
    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    play(
        &suzie,
        &transcript("$ infra request testing.web --role edit --for 8h"),
    )
    .await;
    play(&admin, &transcript("$ infra requests list --pending")).await;
    play(
        &suzie,
        &transcript("$ kubectl --context infra:testing get pods -n web"),
    )
    .await;
}
