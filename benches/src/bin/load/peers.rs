//! The peers: nginx and HAProxy from the machine's packages (`apt-get install nginx haproxy`,
//! which `benches/run-load.sh` does), started when installed, each as a plain TLS reverse proxy
//! to the same upstream with the same certificate: no token check, no decision, no
//! impersonation, no access log (infra-proxy's audit log is off too). So a cell through a peer
//! measures what a mainstream proxy spends on the same TLS and HTTP work, and the report puts
//! infra-proxy's CPU per request beside theirs.
//!
//! - **nginx**: one worker (`master_process off`), HTTP/1.1 and HTTP/2 to the client, pooled
//!   keep-alive HTTP/1.1 to the upstream (nginx proxies only HTTP/1.x), no buffering of
//!   responses (as infra-proxy streams them).
//! - **HAProxy**: one thread (`nbthread 1`), HTTP/1.1 and HTTP/2 to the client, HTTP/2 to the
//!   upstream (`alpn h2`, connections reused: `http-reuse always`), as infra-proxy's pool.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::processes::{self, Process};

/// A peer proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
}

impl Peer {
    /// Both peers.
    pub const ALL: [Self; 2] = [Self::Nginx, Self::Haproxy];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    /// Its binary, when installed.
    pub fn binary(self) -> Option<PathBuf> {
        let name = match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        };
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    }

    /// Its version line, for the report.
    pub fn version(self) -> String {
        let Some(binary) = self.binary() else {
            return "not installed".to_owned();
        };
        let flag = match self {
            Self::Nginx => "-v",
            Self::Haproxy => "-vv",
        };
        let output = Command::new(binary).arg(flag).output().ok();
        output
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_default()
    }
}

/// What a peer needs: the run's directory, certificate, key, CA and the upstream.
#[derive(Debug)]
pub struct PeerFiles<'a> {
    /// Where configurations, logs and temporary files go.
    pub dir: &'a Path,
    /// The server certificate (PEM).
    pub cert: &'a Path,
    /// Its key (PEM).
    pub key: &'a Path,
    /// The CA that signed the upstream's certificate.
    pub ca: &'a Path,
    /// The upstream.
    pub upstream: SocketAddr,
    /// The CPU list to pin the peer to (`taskset -c`), if any.
    pub cpus: Option<&'a str>,
}

/// Starts `peer`, waits until it accepts connections.
pub fn start(peer: Peer, files: &PeerFiles<'_>) -> Result<Process> {
    let binary = peer
        .binary()
        .with_context(|| format!("{} is not installed", peer.name()))?;
    let port = free_port()?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = files.dir.join(peer.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join(match peer {
        Peer::Nginx => "nginx.conf",
        Peer::Haproxy => "haproxy.cfg",
    });
    let text = match peer {
        Peer::Nginx => nginx_config(files, &dir, address),
        Peer::Haproxy => {
            // HAProxy reads the certificate and its key from one file.
            let both = dir.join("server.pem");
            let pem = format!("{}{}", read(files.cert)?, read(files.key)?);
            std::fs::write(&both, pem).with_context(|| format!("writing {}", both.display()))?;
            haproxy_config(files, &both, address)
        }
    };
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let mut command = processes::pinned(&binary, files.cpus);
    match peer {
        Peer::Nginx => command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.join("error.log")),
        Peer::Haproxy => command.arg("-db").arg("-f").arg(&config),
    };
    processes::start_listening(command, address, &dir.join("output.log"))
        .with_context(|| format!("starting {} ({})", peer.name(), binary.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// A port free now on loopback (nginx and HAProxy do not say which port they got for `:0`).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("its address")?.port())
}

fn nginx_config(files: &PeerFiles<'_>, dir: &Path, address: SocketAddr) -> String {
    let d = dir.display();
    let mut text = String::new();
    let _ = write!(
        text,
        "\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 30000;
pid {d}/nginx.pid;
events {{ worker_connections 25000; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  upstream kube {{
    server {upstream};
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }}
  server {{
    listen {address} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    http2_max_concurrent_streams 1000;
    location / {{
      proxy_pass https://kube;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_session_reuse on;
    }}
  }}
}}
",
        upstream = files.upstream,
        cert = files.cert.display(),
        key = files.key.display(),
        ca = files.ca.display(),
    );
    text
}

fn haproxy_config(files: &PeerFiles<'_>, both: &Path, address: SocketAddr) -> String {
    format!(
        "\
global
  nbthread 1
  maxconn 9000
  fd-hard-limit 20000
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  http-reuse always
frontend front
  bind {address} ssl crt {both} alpn h2,http/1.1
  default_backend kube
backend kube
  server upstream {upstream} ssl verify required ca-file {ca} sni str(localhost) alpn h2
",
        both = both.display(),
        upstream = files.upstream,
        ca = files.ca.display(),
    )
}
