//! Sending audit events to the control plane's audit trail: straight into the store for the
//! proxy in the control plane's process (see `app::embedded`), in batched POSTs to
//! `/api/audit/events` with the sync credential for a proxy of another cluster ([`Remote`]).

use std::time::Duration;

use infra_api::audit::{Event, Ingested, MAX_BATCH_EVENTS};
use infra_authz::policy::Secret;

/// Takes batches of events to the control plane's audit trail. Called from the audit writer's
/// thread, so it may block.
pub trait Forward: Send + Sync + std::fmt::Debug {
    /// Delivers `events` (also given as their JSON lines, `lines`), or says why not. When it
    /// fails, the whole batch is kept and sent again later (the store skips what it has).
    fn send(&self, events: &[Event], lines: &[u8]) -> Result<(), String>;

    /// Whether [`Self::send`] reads `events`; when not, the writer gives it only the lines
    /// (and an empty `events`), sparing it an owned event per request.
    fn wants_events(&self) -> bool {
        true
    }
}

/// The control plane of a proxy in another cluster, reached over HTTPS.
#[derive(Debug)]
pub struct Remote {
    http: reqwest::Client,
    url: String,
    key: Secret,
    runtime: tokio::runtime::Handle,
}

/// The largest body sent at once (the control plane reads up to 4 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

impl Remote {
    /// A sender to the control API at `control_url` with `key` (a connector's access key),
    /// trusting `ca_pem` besides the system roots; requests run on `runtime`.
    pub fn new(
        control_url: &str,
        key: Secret,
        ca_pem: Option<&[u8]>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build()?,
            url: format!("{}/api/audit/events", control_url.trim_end_matches('/')),
            key,
            runtime,
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status();
        if status.is_success() {
            let _: Ingested = response
                .json()
                .await
                .map_err(|e| format!("{} answered what is not an ingest result: {e}", self.url))?;
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(format!(
                "{} answered {status}: {}",
                self.url,
                text.chars().take(300).collect::<String>()
            ))
        }
    }
}

/// `{"events":[...]}` bodies of at most [`MAX_BATCH_EVENTS`] events and about
/// [`MAX_BODY_BYTES`] each, made from JSON lines.
pub fn bodies(lines: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut count = 0;
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if count == MAX_BATCH_EVENTS || (count > 0 && body.len() + line.len() > MAX_BODY_BYTES) {
            body.extend_from_slice(b"]}");
            out.push(std::mem::take(&mut body));
            count = 0;
        }
        if count == 0 {
            body.extend_from_slice(b"{\"events\":[");
        } else {
            body.push(b',');
        }
        body.extend_from_slice(line);
        count += 1;
    }
    if count > 0 {
        body.extend_from_slice(b"]}");
        out.push(body);
    }
    out
}

impl Forward for Remote {
    fn wants_events(&self) -> bool {
        false
    }

    fn send(&self, _events: &[Event], lines: &[u8]) -> Result<(), String> {
        self.runtime.block_on(async {
            for body in bodies(lines) {
                self.post(body).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_api::audit::Batch;

    #[test]
    fn lines_become_batches_the_control_plane_reads() {
        let mut lines = Vec::new();
        for id in 0..2500 {
            lines.extend_from_slice(
                format!("{{\"schema\":1,\"id\":\"e{id}\",\"time\":\"2026-01-01T00:00:00Z\",\"kind\":\"request\"}}\n")
                    .as_bytes(),
            );
        }
        let bodies = bodies(&lines);
        let sizes: Vec<usize> = bodies
            .iter()
            .map(|b| {
                serde_json::from_slice::<Batch>(b)
                    .expect("a batch")
                    .events
                    .len()
            })
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert!(super::bodies(b"").is_empty());
    }
}
