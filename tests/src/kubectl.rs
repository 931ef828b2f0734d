//! The real `kubectl`, run against a server with a kubeconfig of its own in a temporary
//! directory (which is also its `HOME` and discovery cache, so runs never share state).
//!
//! The binary is `kubectl` from `PATH`, or the one `INFRA_TESTS_KUBECTL` names.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::certs::IssuedCert;

/// How kubectl authenticates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// A client certificate.
    ClientCert(IssuedCert),
    /// A credential plugin (`users[].user.exec`), as `infra` installs itself.
    Exec {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// Nothing.
    None,
}

/// A kubectl with its own kubeconfig; the directory goes away on drop.
#[derive(Debug)]
pub struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// What a kubectl run printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics, showing both outputs, unless kubectl exited 0.
    #[track_caller]
    #[allow(
        clippy::return_self_not_must_use,
        reason = "also used as a plain assertion statement"
    )]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "kubectl failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless kubectl failed; answers the output for further checks.
    #[track_caller]
    #[allow(
        clippy::return_self_not_must_use,
        reason = "also used as a plain assertion statement"
    )]
    pub fn failure(self) -> Self {
        assert!(
            !self.status.success(),
            "kubectl succeeded but should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The kubectl binary to run.
pub fn program() -> String {
    std::env::var("INFRA_TESTS_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

impl Kubectl {
    /// A kubeconfig with one cluster (`server`, trusting `ca_pem`), one user and one context.
    pub fn new(server: &str, ca_pem: &str, credentials: &Credentials) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("infra-kubectl-")
            .tempdir()
            .expect("the temporary directory is writable");
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let user = match credentials {
            Credentials::Token(token) => json!({"token": token}),
            Credentials::ClientCert(cert) => json!({
                "client-certificate-data": b64(&cert.cert_pem),
                "client-key-data": b64(&cert.key_pem),
            }),
            Credentials::Exec { command, args, env } => json!({"exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": command,
                "args": args,
                "env": env.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<Value>>(),
                "interactiveMode": "Never",
                "provideClusterInfo": false,
            }}),
            Credentials::None => json!({}),
        };
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": server,
                "certificate-authority-data": b64(ca_pem),
            }}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
            "current-context": "test",
        });
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_json::to_vec_pretty(&config).expect("JSON values serialize"),
        )
        .expect("the temporary directory is writable");
        Self { dir, kubeconfig }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The private directory (kubeconfig, `HOME`, cache); tests may put manifests here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command for `kubectl <args>` with this kubeconfig; stdin is closed, outputs piped,
    /// and the process is killed if the command is dropped.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program());
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `kubectl <args>` to the end (at most a minute).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None).await
    }

    /// Runs `kubectl <args>` with `stdin` (e.g. `apply -f -`), to the end (at most a minute).
    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(args, &[], stdin.map(str::as_bytes)).await
    }

    /// Runs `kubectl <args>` with extra environment and optional stdin, to the end (at most a
    /// minute).
    pub async fn run_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (set INFRA_TESTS_KUBECTL?): {e}", program()));
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            pipe.write_all(data).await.expect("kubectl reads its stdin");
            drop(pipe);
        }
        let output = tokio::time::timeout(Duration::from_mins(1), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within a minute"))
            .expect("kubectl ran");
        Output {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}
