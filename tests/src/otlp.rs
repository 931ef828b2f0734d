//! The OTLP/HTTP logs receiver of the audit export's tests: `tests/otlp/receiver.py`, run in the
//! Python venv `scripts/test` makes (`tests/otlp/venv`), which decodes what it receives with the
//! official OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`) — not with the code
//! under test — and writes every log record it took as a JSON line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::certs::Ca;

/// How the receiver behaves.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Answer 503 to the first this many requests.
    pub fail_first: u32,
    /// Answer 503 while this file exists.
    pub fail_while: Option<PathBuf>,
    /// Then refuse this many for good (400).
    pub refuse_first: u32,
    /// Then answer this many with a `partial_success` rejecting one record.
    pub partial_first: u32,
    /// Record these request headers (names) with each record.
    pub keep_headers: Vec<String>,
}

/// A running receiver; killed when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// Its port on 127.0.0.1 (its certificate names `localhost`).
    pub port: u16,
    /// The file of JSON lines it writes.
    pub out: PathBuf,
    child: tokio::process::Child,
}

/// The receiver's directory in the repository.
fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp")
}

impl Receiver {
    /// Starts a receiver serving HTTPS with a `localhost` certificate of `ca`, writing into
    /// `work` (a directory of the test).
    pub async fn start(ca: &Ca, work: &Path, options: &ReceiverOptions) -> Self {
        let python = dir().join("venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test (or `python3 -m venv tests/otlp/venv && tests/otlp/venv/bin/pip install --require-hashes -r tests/otlp/requirements.txt`)",
            python.display()
        );
        let (cert, key) = ca.localhost_cert().write_to(work, "otlp-receiver");
        let out = work.join("otlp-records.jsonl");
        let mut command = tokio::process::Command::new(python);
        command
            .arg(dir().join("receiver.py"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--out")
            .arg(&out)
            .arg("--fail-first")
            .arg(options.fail_first.to_string())
            .arg("--refuse-first")
            .arg(options.refuse_first.to_string())
            .arg("--partial-first")
            .arg(options.partial_first.to_string());
        if let Some(path) = &options.fail_while {
            command.arg("--fail-while").arg(path);
        }
        for header in &options.keep_headers {
            command.arg("--keep-header").arg(header);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the OTLP receiver starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("the receiver says where it listens");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {line:?}"));
        Self { port, out, child }
    }

    /// The base endpoint to give `--audit-otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Every log record taken so far, in the order taken.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    /// The status of every request answered so far.
    pub fn statuses(&self) -> Vec<u16> {
        std::fs::read_to_string(self.out.with_extension("jsonl.requests"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Stops it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
