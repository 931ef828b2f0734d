//! Exec, attach and cp through the proxy.

use std::process::Stdio;

use http::Version;
use infra_tests::apiserver::ActiveStreams;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::{
    DEFAULTS, EDITOR, EDITOR_GROUPS, EXEC_OVER_SPDY, HANG, VIEWER,
    assert_carries_only_our_identity, editor, requests_for, run, run_counted, start, streams,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket_and_spdy_carries_only_our_identity() {
    let h = start().await;
    let kubectl = editor(&h);
    for (env, upgrade) in [(DEFAULTS, "websocket"), (EXEC_OVER_SPDY, "SPDY/3.1")] {
        h.standin.clear_recorded();
        let (out, runs) =
            run_counted(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None).await;
        let out = out.success();
        assert_eq!(out.stdout, "hi\n", "env {env:?}");
        let requests = requests_for(&h.standin, "exec");
        assert_eq!(
            requests.len(),
            runs,
            "one upgrade per run, env {env:?}: {requests:?}"
        );
        let exec = requests.last().expect("the exec reached the apiserver");
        assert_eq!(exec.version, Version::HTTP_11, "upgrades go over HTTP/1.1");
        assert!(
            exec.header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case(upgrade)),
            "env {env:?}: {exec:?}"
        );
        assert_carries_only_our_identity(exec, EDITOR, EDITOR_GROUPS);
        // The session's start and end are audited under the audit id the apiserver got.
        let audit_id = exec.header("audit-id").expect("an audit id");
        let stages = infra_tests::proxy::wait_for(|| async {
            let stages: Vec<_> = h
                .audit_lines()
                .into_iter()
                .filter(|l| l["audit_id"] == audit_id.as_str())
                .map(|l| (l["stage"].as_str().unwrap_or_default().to_owned(), l))
                .collect();
            (stages.len() == 2).then_some(stages)
        })
        .await;
        assert_eq!(stages[0].0, "start", "{stages:?}");
        assert_eq!(stages[0].1["code"], 101, "{stages:?}");
        assert_eq!(stages[1].0, "end", "{stages:?}");
        assert_eq!(stages[1].1["subresource"], "exec", "{stages:?}");
        assert!(stages[1].1["duration_ms"].is_u64(), "{stages:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_stdin_and_exit_codes_pass_through() {
    let h = start().await;
    let kubectl = editor(&h);
    let input = b"line one\nline two\n";
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(
            &kubectl,
            &["exec", "-i", "web", "--", "cat"],
            env,
            Some(input),
        )
        .await
        .success();
        assert_eq!(out.stdout.as_bytes(), input, "env {env:?}");

        let out = run(
            &kubectl,
            &["exec", "web", "--", "sh", "-c", "exit 3"],
            env,
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(3), "env {env:?}: {out:?}");
        assert!(
            out.stderr.contains("command terminated with exit code 3"),
            "env {env:?}: {out:?}"
        );

        let out = run(
            &kubectl,
            &["exec", "web", "--", "stderr-echo", "oops"],
            env,
            None,
        )
        .await
        .success();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", "oops\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_kubectl_exec_ends_the_session_at_the_apiserver() {
    let h = start().await;
    let kubectl = editor(&h);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let mut command = kubectl.command(&["exec", "-i", "web", "--", "cat"]);
        command.envs(env.iter().copied()).stdin(Stdio::piped());
        command.stderr(Stdio::null());
        let mut child = command.spawn().expect("kubectl runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        stdin.write_all(b"still here\n").await.expect("written");
        let line = tokio::time::timeout(HANG, stdout.next_line())
            .await
            .expect("cat answers")
            .expect("readable")
            .expect("kubectl is running");
        assert_eq!(line, "still here", "env {env:?}");
        streams(&h.standin, "the session is open", |s| s.upgrades == 1).await;
        // stdin stays open: only kubectl going away can end the session.
        child.kill().await.expect("kubectl stops");
        streams(&h.standin, "the session ends when kubectl goes away", |s| {
            s.upgrades == 0
        })
        .await;
        drop(stdin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_and_cp_work_through_the_proxy() {
    let h = start().await;
    let kubectl = editor(&h);
    let mut attaches = 0;
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let (out, runs) =
            run_counted(&kubectl, &["attach", "-i", "web"], env, Some(b"attached\n")).await;
        attaches += runs;
        let out = out.success();
        assert!(out.stdout.ends_with("attached\n"), "env {env:?}: {out:?}");

        let local = kubectl.dir().join("fetched.txt");
        let local_arg = local.to_str().expect("a UTF-8 temporary path");
        run(
            &kubectl,
            &["cp", "web:/tmp/remote.txt", local_arg],
            env,
            None,
        )
        .await
        .success();
        let fetched = std::fs::read_to_string(&local).expect("kubectl wrote the file");
        assert_eq!(fetched, "contents of /tmp/remote.txt\n", "env {env:?}");

        let upload = kubectl.dir().join("up.txt");
        std::fs::write(&upload, "12345").expect("the temporary directory is writable");
        let upload_arg = upload.to_str().expect("a UTF-8 temporary path");
        let out = run(&kubectl, &["cp", upload_arg, "web:/tmp/"], env, None)
            .await
            .success();
        // The stand-in's tar lists what it received on stderr.
        assert!(out.stderr.contains("x up.txt 5"), "env {env:?}: {out:?}");
    }
    let attach = requests_for(&h.standin, "attach");
    assert_eq!(attach.len(), attaches, "one upgrade per run: {attach:?}");
    for request in &attach {
        assert_carries_only_our_identity(request, EDITOR, EDITOR_GROUPS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_kubectls_forbidden_message_for_exec_and_the_apiserver_never_sees_it() {
    let h = start().await;
    let kubectl = h.kubectl_as(VIEWER, &[]);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .failure();
        assert!(
            out.stderr.contains(&format!(
                "pods \"web\" is forbidden: User \"{VIEWER}\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
            )),
            "env {env:?}: {}",
            out.stderr
        );
        let out = run(&kubectl, &["attach", "web"], env, None).await.failure();
        assert!(
            out.stderr
                .contains("cannot create resource \"pods/attach\" in API group \"\""),
            "env {env:?}: {}",
            out.stderr
        );
    }
    // The viewer may read the pod (kubectl does before it execs), nothing more.
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| !r.path().ends_with("/exec") && !r.path().ends_with("/attach")),
        "a denied upgrade never reaches the apiserver"
    );
    assert_eq!(h.standin.active_streams(), ActiveStreams::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_refused_by_the_apiserver_shows_its_status() {
    let h = start().await;
    h.standin.set_refuse_upgrades(true);
    let kubectl = editor(&h);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .failure();
        assert!(
            out.stderr.contains(&format!(
                "pods \"web\" is forbidden: User \"{EDITOR}\" cannot create resource \"pods/exec\""
            )),
            "env {env:?}: {}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "env {env:?}");
    }
    assert_eq!(h.standin.active_streams().upgrades, 0);
}
