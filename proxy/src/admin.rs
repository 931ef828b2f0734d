//! The admin listener (loopback by default): `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/readyz` reports: each component says whether it is ready and, if not, why.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Mutex<Vec<(&'static str, Result<(), String>)>>,
    /// Problems that do not make the proxy unready but should be seen (a policy reload that
    /// failed while the previous policy stays in force).
    warnings: Mutex<Vec<(&'static str, String)>>,
}

impl Readiness {
    /// Sets the state of one check.
    pub fn set(&self, check: &'static str, state: Result<(), String>) {
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match checks.iter_mut().find(|(name, _)| *name == check) {
            Some(entry) => entry.1 = state,
            None => checks.push((check, state)),
        }
    }

    /// Sets or clears a warning.
    pub fn warn(&self, about: &'static str, warning: Option<String>) {
        let mut warnings = self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        warnings.retain(|(name, _)| *name != about);
        if let Some(warning) = warning {
            warnings.push((about, warning));
        }
    }

    /// Whether every check passes, and the report.
    pub fn report(&self) -> (bool, String) {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ready = !checks.is_empty();
        let mut out = String::new();
        for (name, state) in checks.iter() {
            match state {
                Ok(()) => {
                    let _ = writeln!(out, "[+] {name} ok");
                }
                Err(why) => {
                    ready = false;
                    let _ = writeln!(out, "[-] {name} failed: {why}");
                }
            }
        }
        for (name, warning) in self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "[!] {name}: {warning}");
        }
        out.push_str(if ready {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        (ready, out)
    }
}

/// Serves the admin endpoints until the process ends.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, metrics: Arc<Metrics>) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let readiness = Arc::clone(&readiness);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(request.uri().path(), &readiness, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(path: &str, readiness: &Readiness, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (code, content_type, body) = match path {
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let (ready, report) = readiness.report();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, "text/plain", report)
        }
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the admin listener (before anything else starts, so a taken port fails fast).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let readiness = Readiness::default();
        assert!(!readiness.report().0, "nothing checked yet is not ready");
        readiness.set("policy", Ok(()));
        readiness.set("upstream", Err("connection refused".into()));
        let (ready, report) = readiness.report();
        assert!(!ready);
        assert!(
            report.contains("[-] upstream failed: connection refused"),
            "{report}"
        );
        readiness.set("upstream", Ok(()));
        readiness.warn("policy", Some("policy.yaml:3:5: bad".into()));
        let (ready, report) = readiness.report();
        assert!(ready, "{report}");
        assert!(report.contains("[!] policy: policy.yaml:3:5: bad"));
    }
}
