//! The control plane's own actions in the audit trail (the `audit_events` table, see
//! [`super::audit_events`]): appended to and read back.

use std::time::SystemTime;

use infra_api::audit::Event;

use super::audit_events::{EventRow, INSERT_ONE_RETURNING, control_event};
use super::{Columns, Op as _, Store, StoreError, secs, time};

/// One entry of the audit trail of control actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Increasing id, for paging.
    pub id: i64,
    /// When.
    pub at: SystemTime,
    /// Who asked.
    pub actor: String,
    /// What was done (`grant.create`).
    pub action: String,
    /// To what.
    pub target: String,
    /// More, when there is more (never a secret).
    pub detail: String,
}

impl Store {
    /// Appends a control action that changed nothing in the store (a login, a token issued) to
    /// the audit trail, answering its arrival number. Changes made through the store are
    /// audited by the store itself.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        let event = control_event(secs(now), actor, action, target, detail);
        let row = EventRow::of(&event)?;
        with_db!(self, |pool, _begin| {
            bind_event_row!(sqlx::query(INSERT_ONE_RETURNING), row)
                .fetch_one(pool)
                .await
                .op("append to the audit trail")?
                .int("seq")
        })
    }

    /// Up to `limit` control actions (every event but proxied requests) with arrival numbers
    /// above `after`, oldest first.
    pub async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "SELECT seq, at_us, body FROM audit_events WHERE seq > $1 AND kind <> 'request' \
                 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .op("list the audit trail")?
            .iter()
            .map(|r| audit_from(r))
            .collect()
        })
    }
}

fn audit_from(row: &dyn Columns) -> Result<AuditEvent, StoreError> {
    let event: Event =
        serde_json::from_str(&row.text("body")?).map_err(|_| StoreError::InvalidRow {
            what: "audit event".to_owned(),
        })?;
    Ok(AuditEvent {
        id: row.int("seq")?,
        at: time(row.int("at_us")? / 1_000_000),
        actor: event.user.unwrap_or_default(),
        action: event.action.unwrap_or_default(),
        target: event.target.unwrap_or_default(),
        detail: event.detail.unwrap_or_default(),
    })
}
