//! The control plane's side of the audit trail that is not a store change: removing events
//! older than the retention, and recording policy-file reloads.

use std::time::{Duration, UNIX_EPOCH};

use infra_api::audit::{Event, Kind, SCHEMA_VERSION};

use super::{ControlPlane, FILE_ACTOR};
use crate::store::StoreError;

/// How many old events one statement removes, so that no statement holds the database long.
pub const PURGE_BATCH: u32 = 5_000;

impl ControlPlane {
    /// Removes the events older than the retention (`audit_retention`), a batch at a time;
    /// answers how many.
    pub async fn purge_old_audit_events(&self) -> Result<u64, StoreError> {
        let cutoff = self
            .now()
            .checked_sub(self.config.audit_retention)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let cutoff = i64::try_from(cutoff.as_micros()).unwrap_or(i64::MAX);
        let mut removed = 0;
        loop {
            // While the trail is exported, what the receiver has not taken yet stays.
            let batch = if self.export.is_some() {
                self.store
                    .purge_exported_audit(cutoff, PURGE_BATCH, crate::otlp::exporter::NAME)
                    .await?
            } else {
                self.store.purge_audit(cutoff, PURGE_BATCH).await?
            };
            removed += batch;
            if batch < u64::from(PURGE_BATCH) {
                break;
            }
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            tracing::info!(removed, "old audit events removed");
        }
        Ok(removed)
    }

    /// Records a reload of the policy file at `path` whose contents have the SHA-256 `hash`
    /// (hex): applied, or refused with `refused` saying why.
    pub async fn audit_policy_reload(
        &self,
        path: &str,
        hash: &str,
        refused: Option<&str>,
    ) -> Result<(), StoreError> {
        let event = Event {
            schema: SCHEMA_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            time: jiff::Timestamp::try_from(self.now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            kind: Kind::Policy,
            user: Some(FILE_ACTOR.to_owned()),
            action: Some(
                if refused.is_some() {
                    "policy.refuse"
                } else {
                    "policy.apply"
                }
                .to_owned(),
            ),
            target: Some(format!("policy file {path:?}")),
            decision: Some(if refused.is_some() { "deny" } else { "allow" }.to_owned()),
            reason: refused.map(str::to_owned),
            hash: Some(hash.to_owned()),
            ..Event::default()
        };
        self.store.record_audit_events(&[event]).await.map(|_| ())
    }
}
