//! The processes a run starts: the upstream (this binary, `load upstream`) and infra-proxy (the
//! release binary, `infra-proxy serve`). Each is killed, by its own PID, when its handle drops,
//! so neither outlives the run even when the harness fails half way.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Held open: the upstream exits when it closes.
    _stdin: Option<ChildStdin>,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Process {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only this child, by its PID; an error says it has already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` run under `taskset -c cpus` when `cpus` is given (the PID stays the program's:
/// taskset executes it in place).
pub fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Starts `command` (a server that says nothing useful on its output, which goes to `log`) and
/// waits until `address` accepts connections.
pub fn start_listening(mut command: Command, address: SocketAddr, log: &Path) -> Result<Process> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file")?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("spawning")?;
    let mut process = Process {
        child,
        _stdin: None,
        address,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(process);
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("exited ({status}) before listening on {address}; its output:\n{tail}");
        }
        if std::time::Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("not listening on {address} within 20 s; its output:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the upstream (this same binary) and waits for its address.
pub fn start_upstream(
    cert: &Path,
    key: &Path,
    threads: usize,
    cpus: Option<&str>,
    bulk_bytes: usize,
) -> Result<Process> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut child = pinned(&exe, cpus)
        .arg("upstream")
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--bulk-bytes")
        .arg(bulk_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} upstream", exe.display()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("the upstream's stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Nothing else is printed; read to the end so the pipe never fills.
        for _ in lines {}
    });
    let mut process = Process {
        child,
        _stdin: stdin,
        address: "127.0.0.1:0".parse().context("placeholder address")?,
    };
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow!("the upstream did not say where it listens within 20 s"))?;
    process.address = line
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("the upstream printed {line:?}, not its address"))?;
    Ok(process)
}

/// The files and names `infra-proxy serve` is started with.
#[derive(Debug, Clone)]
pub struct ProxyFiles {
    /// The release binary.
    pub binary: PathBuf,
    /// `--destination`.
    pub destination: String,
    /// `--issuer`.
    pub issuer: String,
    /// `--jwks-file`.
    pub jwks: PathBuf,
    /// `--policy`.
    pub policy: PathBuf,
    /// `--kubeconfig` (pointing at the upstream).
    pub kubeconfig: PathBuf,
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `TOKIO_WORKER_THREADS` for the proxy, if set.
    pub worker_threads: Option<usize>,
    /// `--audit-log` (none: `off`).
    pub audit_log: Option<PathBuf>,
    /// The CPU list to pin the proxy to (`taskset -c`), if any.
    pub cpus: Option<String>,
}

impl ProxyFiles {
    /// The command line, for the report.
    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "serve".into(),
            "--destination".into(),
            self.destination.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
            "--policy".into(),
            path(&self.policy),
            "--kubeconfig".into(),
            path(&self.kubeconfig),
            "--issuer".into(),
            self.issuer.clone(),
            "--jwks-file".into(),
            path(&self.jwks),
            "--audit-log".into(),
            self.audit_log.as_deref().map_or_else(|| "off".into(), path),
            // The watch phase holds 10,000 connections from one address, each with a watch of
            // the one user: above the default caps (10,000 connections, 256 per client, 100
            // requests in flight per user), which are for many clients, not one load client.
            "--max-connections".into(),
            "0".into(),
            "--max-connections-per-client".into(),
            "0".into(),
            "--max-requests-in-flight-per-user".into(),
            "0".into(),
            "--log-format".into(),
            "json".into(),
        ]
    }
}

/// Starts infra-proxy and waits for the address it serves on (from its JSON log); its log goes
/// to `log`.
pub fn start_proxy(files: &ProxyFiles, log: &Path) -> Result<Process> {
    if !files.binary.is_file() {
        bail!(
            "{} does not exist; build it first: cargo build --release -p infra-proxy",
            files.binary.display()
        );
    }
    let mut command = pinned(&files.binary, files.cpus.as_deref());
    command.args(files.args()).env("INFRA_LOG", "info");
    if let Some(threads) = files.worker_threads {
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", files.binary.display()))?;
    let stderr = child.stderr.take().context("the proxy's stderr")?;
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            if let Some(address) = serving_address(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(address);
            }
        }
    });
    let mut process = Process {
        child,
        _stdin: None,
        address: "127.0.0.1:0".parse().context("placeholder address")?,
    };
    let Ok(address) = rx.recv_timeout(Duration::from_secs(30)) else {
        let status = process.child.try_wait().ok().flatten();
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        bail!("infra-proxy did not start serving within 30 s (exit: {status:?}); its log:\n{tail}");
    };
    process.address = address;
    Ok(process)
}

/// The `address` of the proxy's "infra-proxy serving" log line.
fn serving_address(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "infra-proxy serving" {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}
