//! Exports of the audit trail (`docs/audit.md`, "OpenTelemetry"): where each export is in the
//! trail, and which replica exports now.
//!
//! An export reads the trail in *export order* and remembers the position of the last event its
//! receiver accepted ([`ExportPosition`]), in the store, so that a restart or another replica
//! goes on from there: at least once, nothing skipped.
//!
//! - On SQLite, writers are serialized, so arrival (`seq`) is commit order: the export order is
//!   `seq`.
//! - On PostgreSQL, `seq` is taken at insert, not at commit, so a smaller `seq` may become
//!   visible after a larger one. Each row records the transaction that wrote it (`xid`, migration
//!   0008); the export order is (`xid`, `seq`), and only rows of transactions older than every
//!   transaction still running (`pg_snapshot_xmin`) are read: none can appear later before the
//!   position. A transaction left open for long (anywhere on the server) delays the export; it
//!   never makes it skip.
//!
//! One replica exports at a time: the holder of the export's lease ([`Store::take_export_lease`]),
//! which it renews while it works; another takes it over once it has run out. The position only
//! moves under the lease ([`Store::advance_export`]).

use infra_api::audit::Event;

use super::{Backend, Columns, Op as _, Store, StoreError};

/// Where an export is: after this event (both 0: before the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportPosition {
    /// The writing transaction (PostgreSQL; 0 on SQLite).
    pub xid: i64,
    /// The arrival number.
    pub seq: i64,
}

/// An export's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportState {
    /// The last event the receiver accepted.
    pub after: ExportPosition,
    /// The replica holding the lease (`""`: none yet).
    pub holder: String,
    /// Until when, in milliseconds since the epoch.
    pub lease_until_ms: i64,
    /// Events the receiver accepted, all replicas together, since the export began.
    pub exported: i64,
    /// Events the receiver refused for good.
    pub dropped: i64,
}

/// [`Store::purge_audit`] sparing what export `$3` has not exported yet.
const PURGE_EXPORTED_SQLITE: &str = "DELETE FROM audit_events WHERE seq IN \
     (SELECT seq FROM audit_events WHERE at_us < $1 \
        AND seq <= (SELECT after_seq FROM audit_exports WHERE name = $3) \
      ORDER BY at_us LIMIT $2)";
const PURGE_EXPORTED_POSTGRES: &str = "DELETE FROM audit_events WHERE seq IN \
     (SELECT seq FROM audit_events WHERE at_us < $1 \
        AND (xid, seq) <= (SELECT CAST(CAST(after_xid AS TEXT) AS xid8), after_seq \
                           FROM audit_exports WHERE name = $3) \
      ORDER BY at_us LIMIT $2)";

impl Store {
    /// Up to `limit` events after `after`, in export order, each with its position.
    pub async fn audit_after(
        &self,
        after: ExportPosition,
        limit: u32,
    ) -> Result<Vec<(ExportPosition, Event)>, StoreError> {
        // The same read as a follower's, with no filter (one query for both).
        self.follow_audit(&super::AuditFilter::default(), after, limit)
            .await
    }

    /// Creates export `name`'s row, at the trail's start, when there is none.
    async fn create_export(&self, name: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "INSERT INTO audit_exports (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .execute(pool)
            .await
            .op("create the audit export")?;
            Ok(())
        })
    }

    /// The export `name`'s row (created, at the trail's start, when there is none).
    pub async fn export_state(&self, name: &str) -> Result<ExportState, StoreError> {
        self.create_export(name).await?;
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "SELECT after_xid, after_seq, holder, lease_until_ms, exported, dropped \
                 FROM audit_exports WHERE name = $1",
            )
            .bind(name)
            .fetch_one(pool)
            .await
            .op("read the audit export")?;
            Ok(ExportState {
                after: ExportPosition {
                    xid: row.int("after_xid")?,
                    seq: row.int("after_seq")?,
                },
                holder: row.text("holder")?,
                lease_until_ms: row.int("lease_until_ms")?,
                exported: row.int("exported")?,
                dropped: row.int("dropped")?,
            })
        })
    }

    /// Takes or renews the lease of export `name` for `holder` until `until_ms`, if it is
    /// `holder`'s already, or free, or ran out before `now_ms` (or `force`: an SQLite store has
    /// one control plane, so a lease left by its previous run is its own). Answers whether
    /// `holder` has it now; then the export's position is read with [`Self::export_state`].
    pub async fn take_export_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let force = matches!(self.backend, Backend::Sqlite(_));
        self.create_export(name).await?;
        with_db!(self, |pool, _begin| {
            let taken = sqlx::query(
                "UPDATE audit_exports SET holder = $2, lease_until_ms = $3 \
                 WHERE name = $1 AND (holder = $2 OR holder = '' OR lease_until_ms < $4 OR $5)",
            )
            .bind(name)
            .bind(holder)
            .bind(until_ms)
            .bind(now_ms)
            .bind(force)
            .execute(pool)
            .await
            .op("take the audit export's lease")?
            .rows_affected();
            Ok(taken == 1)
        })
    }

    /// Moves export `name` on to `to`, counting `exported` and `dropped` events, and renews the
    /// lease until `until_ms` — only while `holder` holds it. Answers whether it did (`false`:
    /// another replica took the export over, and goes on from the position before).
    pub async fn advance_export(
        &self,
        name: &str,
        holder: &str,
        to: ExportPosition,
        exported: u64,
        dropped: u64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        with_db!(self, |pool, _begin| {
            let moved = sqlx::query(
                "UPDATE audit_exports SET after_xid = $3, after_seq = $4, \
                 exported = exported + $5, dropped = dropped + $6, lease_until_ms = $7 \
                 WHERE name = $1 AND holder = $2",
            )
            .bind(name)
            .bind(holder)
            .bind(to.xid)
            .bind(to.seq)
            .bind(count(exported))
            .bind(count(dropped))
            .bind(until_ms)
            .execute(pool)
            .await
            .op("advance the audit export")?
            .rows_affected();
            Ok(moved == 1)
        })
    }

    /// Removes up to `batch` events older than `before_us` that export `name` has exported
    /// (see [`Store::purge_audit`]): the retention never removes what the receiver has not
    /// accepted yet.
    pub async fn purge_exported_audit(
        &self,
        before_us: i64,
        batch: u32,
        name: &str,
    ) -> Result<u64, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite(_) => PURGE_EXPORTED_SQLITE,
            Backend::Postgres(_) => PURGE_EXPORTED_POSTGRES,
        };
        write_tx!(self, |tx| {
            sqlx::query(sql)
                .bind(before_us)
                .bind(i64::from(batch))
                .bind(name)
                .execute(&mut *tx)
                .await
                .op("remove old exported audit events")?
                .rows_affected()
        })
    }

    /// Lets go of export `name`'s lease (a replica stopping), so another takes over at once.
    pub async fn release_export_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "UPDATE audit_exports SET holder = '', lease_until_ms = 0 \
                 WHERE name = $1 AND holder = $2",
            )
            .bind(name)
            .bind(holder)
            .execute(pool)
            .await
            .op("release the audit export's lease")?;
            Ok(())
        })
    }
}
