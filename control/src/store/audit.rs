//! The audit trail of control actions: appended to and read back.

use std::time::SystemTime;

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

fn audit_from(row: &dyn Columns) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: row.int("id")?,
        at: time(row.int("at")?),
        actor: row.text("actor")?,
        action: row.text("action")?,
        target: row.text("target")?,
        detail: row.text("detail")?,
    })
}

impl Store {
    /// Appends a control action that changed nothing in the store (a login, a token issued).
    /// Changes made through the store are audited by the store itself.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(secs(now))
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(detail)
            .fetch_one(pool)
            .await
            .op("append to the audit log")?
            .int("id")
        })
    }

    /// Up to `limit` audit events with ids above `after`, oldest first.
    pub async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "SELECT id, at, actor, action, target, detail FROM audit_log WHERE id > $1 \
                 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .op("list the audit log")?
            .iter()
            .map(|r| audit_from(r))
            .collect()
        })
    }
}
