//! The `infra` CLI end to end: the real binary against infra-proxy with its embedded control plane
//! (real TLS, real SQLite) in front of the stand-in apiserver, and the real kubectl through the
//! kubeconfig the CLI wrote, its credential plugin being the CLI itself.
//!
//! The binary is this package's own (cargo builds it before these tests and passes its path as
//! `CARGO_BIN_EXE_infra`); `INFRA_TESTS_CLI` names another one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

mod audit;
mod basics;
mod clusters;
mod first_run;
mod oidc;
mod readme;
mod requests;

const POLICY: &str = "grants: []\n";
const SUZIE: &str = "suzie@example.com";
const SUZIE_PASSWORD: &str = "a-long-enough-passphrase";

fn infra_binary() -> PathBuf {
    // Cargo builds this package's binary before its integration tests and names it here.
    std::env::var_os("INFRA_TESTS_CLI")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_infra")), PathBuf::from)
}

/// One person at one machine: their `~/.infra`, kubeconfig and home folder.
#[derive(Debug)]
struct Person {
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Person {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("infra-cli-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kube").join("config")
    }

    fn kubeconfig_json(&self) -> Value {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig written");
        serde_saphyr::from_str(&text).expect("kubeconfig parses")
    }

    fn command(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("INFRA_HOME", self.dir.path().join(".infra"))
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run_program(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: &str,
    ) -> Run {
        let mut child = self
            .command(program, args, env)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_mins(1), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} did not finish in a minute", program.display()))
            .expect("ran");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn infra(&self, args: &[&str]) -> Run {
        self.infra_with(args, &[], "").await
    }

    async fn infra_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        self.run_program(&infra_binary(), args, env, stdin).await
    }

    async fn kubectl(&self, args: &[&str]) -> Run {
        let kubectl = PathBuf::from(infra_tests::kubectl::program());
        let kubectl = if kubectl.components().count() > 1 {
            kubectl
        } else {
            which(&kubectl)
        };
        self.run_program(&kubectl, args, &[], "").await
    }

    /// Logs in with a password, trusting the harness's CA.
    async fn login(&self, h: &ControlHarness, user: &str, password: &str) -> Run {
        let ca = self.dir.path().join("ca.pem");
        std::fs::write(&ca, h.ca.cert_pem()).expect("write CA");
        self.infra_with(
            &[
                "login",
                &h.control_url(),
                "--tls-trusted-cert",
                ca.to_str().expect("utf-8 path"),
                "--user",
                user,
                "--non-interactive",
            ],
            &[("INFRA_PASSWORD", password)],
            "",
        )
        .await
    }
}

fn which(program: &Path) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} is not on PATH", program.display()))
}

/// The admin, logged in, with suzie created.
async fn admin_with_suzie(h: &ControlHarness) -> Person {
    let admin = Person::new();
    admin.login(h, "admin", ADMIN_PASSWORD).await.ok();
    admin
        .infra_with(
            &["users", "add", SUZIE, "--password-stdin"],
            &[],
            &format!("{SUZIE_PASSWORD}\n"),
        )
        .await
        .ok();
    admin
}
