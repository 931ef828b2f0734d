//! The store: what the control plane keeps, in SQLite or PostgreSQL.
//!
//! One [`Store`] handle (cheap to clone) over either database. The SQL is written once: both
//! dialects take `$1` placeholders, `ON CONFLICT`, `RETURNING` and the same types (64-bit
//! integers, text, bytes), so every method has one body, expanded for each pool type by the
//! `with_db!` macro. Only the migrations differ (`control/migrations/{sqlite,postgres}`), in how
//! they spell types and id columns. Opening, first start and corruption are in [`open`].
//!
//! - **Time is a parameter**: every method that records or compares a time takes `now`, stored
//!   as whole seconds since the Unix epoch.
//! - **Every control action is audited** in the same transaction as the change it records:
//!   mutating methods take the `actor` (who asked) and write an [`AuditEvent`].
//! - **Optimistic concurrency**: updatable rows carry a `revision`; an update or delete that
//!   names a revision that is no longer current fails with [`StoreError::Conflict`] (HTTP 409)
//!   and changes nothing. Creating what exists fails with [`StoreError::AlreadyExists`].
//! - **Writes are serialized where they must be**: on SQLite a write transaction starts with
//!   `BEGIN IMMEDIATE` (so two writers queue on the busy timeout instead of failing when one
//!   upgrades a read lock); on PostgreSQL unique constraints and `ON CONFLICT` decide races.
//! - **Secrets at rest**: provider client secrets, refresh tokens and signing keys' private
//!   halves are sealed with the root key ([`crate::crypto`]); access keys are stored as
//!   the SHA-256 of their secret ([`crate::keys`]); passwords as Argon2id hashes
//!   ([`crate::passwords`]).
//!
//! One file per aggregate, each with its own `impl Store` block and its row types: `users`,
//! `lockout` (password logins and failed-login counting), `groups`, `grants`, `access_keys`,
//! `providers`, `idp_sessions`, `destinations`, `signing_keys`, `audit` and `audit_events` (the
//! audit trail), `audit_exports` (the OTLP export's position and lease), `managed`,
//! `oidc_logins`, `requests` and `request_rules` (access requests, their reviews and rules) and
//! `notices` (changes announced to the other replicas). This file keeps the handle, the error,
//! and what they all share: the `with_db!` dispatch, the `write_tx!` write skeleton, and typed
//! column access.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use infra_authz::policy::{NameError, Secret};

use crate::crypto::{SealError, Sealer, SecretBytes};
use crate::keys::GenerateError;
use crate::passwords::{HashError, Passwords, PolicyError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// Creating a thing that already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists.
        what: String,
    },
    /// An update or delete named a revision that is no longer current: someone else changed the
    /// thing first. Nothing was changed; read it again and retry.
    #[error("{what} was changed by someone else: expected revision {expected}, found {actual}")]
    Conflict {
        /// What conflicted.
        what: String,
        /// The revision the caller had.
        expected: i64,
        /// The revision in the store.
        actual: i64,
    },
    /// The thing is not in a state that allows the change (a request already decided).
    #[error("{what}")]
    WrongState {
        /// What is wrong, worded for the caller.
        what: String,
    },
    /// A user, group, role or resource name is refused.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A password is refused by the policy.
    #[error(transparent)]
    WeakPassword(#[from] PolicyError),
    /// Hashing a password failed.
    #[error(transparent)]
    HashPassword(#[from] HashError),
    /// Making an access key failed.
    #[error(transparent)]
    GenerateKey(#[from] GenerateError),
    /// Sealing or opening a secret at rest failed.
    #[error("cannot seal or open {what}")]
    Seal {
        /// Which secret.
        what: String,
        /// Why.
        source: SealError,
    },
    /// A row holds a value this version does not understand.
    #[error("the store holds an invalid {what}")]
    InvalidRow {
        /// What is invalid.
        what: String,
    },
    /// A database operation failed.
    #[error("the store failed to {operation}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// Why.
        source: sqlx::Error,
    },
}

/// The two pools. Each method's body is written once and expanded for both by `with_db!`.
#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store handle. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    sealer: Sealer,
    passwords: Passwords,
    rng: SystemRandom,
    created: bool,
    /// The audit trail's group writer, started with the first batch of events.
    audit_ingest: audit_ingest::Handle,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database_kind())
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Runs `$body` with `$pool` bound to whichever pool this store has, and `$begin` to the
/// statement that starts a write transaction there.
macro_rules! with_db {
    ($store:expr, |$pool:ident, $begin:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => {
                let $begin: &'static str = "BEGIN IMMEDIATE";
                let _ = $begin;
                $body
            }
            $crate::store::Backend::Postgres($pool) => {
                let $begin: &'static str = "BEGIN";
                let _ = $begin;
                $body
            }
        }
    };
}

/// Binds an [`EventRow`]'s columns to `$query`, in the order of [`INSERT_COLUMNS`].
macro_rules! bind_event_row {
    ($query:expr, $row:expr) => {{
        let row = $row;
        $query
            .bind(row.event_id)
            .bind(row.at_us)
            .bind(row.kind)
            .bind(row.user_name)
            .bind(row.groups)
            .bind(row.destination)
            .bind(row.verb)
            .bind(row.resource)
            .bind(row.namespace)
            .bind(row.name)
            .bind(row.decision)
            .bind(row.reason)
            .bind(row.body)
    }};
}

/// The write skeleton, written once: begins a write transaction on the store's database (see
/// `with_db!`), binds it to `$tx` for `$body`, and commits when `$body` is done, answering
/// `Ok` with what `$body` gave.
///
/// - `write_tx!(store, |tx| body)`: `body` evaluates to the answer. For upkeep that is not a
///   control action, so is not audited.
/// - `write_tx!(store, at, actor, |tx| body)`: `body` evaluates to `(answer, entry)`, `entry`
///   being an [`Entry`] or an `Option<Entry>`; the entry is appended to the audit trail, by
///   `actor` at `at` (seconds), in the same transaction, just before the commit.
///
/// `body` may leave early with `return` (an error, or an answer with nothing to keep): the
/// transaction is then dropped, which rolls it back.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        with_db!($store, |pool, begin| {
            let mut $tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let answer = $body;
            $tx.commit().await.op("commit")?;
            Ok(answer)
        })
    };
    ($store:expr, $at:expr, $actor:expr, |$tx:ident| $body:expr) => {
        with_db!($store, |pool, begin| {
            let mut $tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let (answer, entry) = $body;
            if let Some(entry) = Option::<$crate::store::Entry>::from(entry) {
                let mut event = $crate::store::audit_events::control_event(
                    $at,
                    &$actor,
                    entry.action,
                    &entry.target,
                    &entry.detail,
                );
                event.before = entry.before;
                event.after = entry.after;
                let row = $crate::store::audit_events::EventRow::of(&event)?;
                bind_event_row!(sqlx::query($crate::store::audit_events::INSERT_ONE), row)
                    .execute(&mut *$tx)
                    .await
                    .op("append to the audit trail")?;
            }
            $tx.commit().await.op("commit")?;
            Ok(answer)
        })
    };
}

/// The error for an update or delete in the transaction `$tx` that matched no row: reads the
/// row's revision (`$sql` with `$key` bound) and gives [`StoreError::Conflict`] when the row is
/// there and `$expected` names a revision, else [`StoreError::NotFound`].
macro_rules! revision_conflict {
    ($tx:ident, $sql:expr, $key:expr, $op:expr, $what:expr, $expected:expr) => {{
        let actual = sqlx::query($sql)
            .bind($key)
            .fetch_optional(&mut *$tx)
            .await
            .op($op)?;
        let what: String = $what;
        match (actual, $expected) {
            (Some(r), Some(expected)) => $crate::store::StoreError::Conflict {
                what,
                expected,
                actual: r.int("revision")?,
            },
            _ => $crate::store::not_found(what),
        }
    }};
}

// The aggregates come after the macros above, which they use.
mod access_keys;
mod audit;
mod audit_events;
mod audit_exports;
mod audit_ingest;
mod destinations;
mod ended_sessions;
mod grants;
mod groups;
mod identities;
mod idp_sessions;
mod lockout;
mod managed;
mod notices;
mod oidc_logins;
pub mod open;
mod providers;
mod request_rules;
mod requests;
mod signing_keys;
mod users;

pub use access_keys::{AccessKey, KeyError, KeyKind, NewAccessKey};
pub use audit::AuditEvent;
pub use audit_events::{AuditCursor, AuditFilter, control_event};
pub use audit_exports::{ExportPosition, ExportState};
pub use destinations::{Destination, NewDestination};
pub use grants::{Purged, StoredGrant};
pub use groups::Group;
pub use identities::Binding;
pub use idp_sessions::IdpSession;
pub use lockout::{LOCKOUT_DURATION, LOCKOUT_FAILURES, LoginError, UNKNOWN_CLIENTS};
pub use oidc_logins::PendingLogin;
pub use open::{Database, OpenError, StoreConfig};
pub use providers::StoredProvider;
pub use requests::{
    NewRequestRow, RequestFilter, RequestOutcome, StoredRequest, StoredReview, SweptRequests,
};
pub use signing_keys::{NewSigningKey, SigningKey};
pub use users::User;

/// A control action as the audit log records it, besides when and by whom: what `write_tx!`
/// appends.
struct Entry {
    /// What was done (`grant.create`).
    action: &'static str,
    /// To what.
    target: String,
    /// More, when there is more (never a secret).
    detail: String,
    /// The object before the change (updates, deletes); never a secret.
    before: Option<serde_json::Value>,
    /// The object after the change (creations, updates); never a secret.
    after: Option<serde_json::Value>,
}

impl Entry {
    /// `action` on `target`, with nothing more to say.
    fn new(action: &'static str, target: String) -> Self {
        Self {
            action,
            target,
            detail: String::new(),
            before: None,
            after: None,
        }
    }

    /// With `detail`.
    fn detail(self, detail: String) -> Self {
        Self { detail, ..self }
    }

    /// With the object as it was before the change.
    fn before(self, object: &impl serde::Serialize) -> Self {
        Self {
            before: serde_json::to_value(object).ok(),
            ..self
        }
    }

    /// With the object as it is after the change.
    fn after(self, object: &impl serde::Serialize) -> Self {
        Self {
            after: serde_json::to_value(object).ok(),
            ..self
        }
    }
}

/// Names the operation of a failed query.
trait Op<T> {
    fn op(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> Op<T> for Result<T, sqlx::Error> {
    fn op(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { operation, source })
    }
}

/// Typed column access shared by both row types.
trait Columns {
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError>;
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, col: &str) -> Result<i64, StoreError> {
                self.try_get(col).op("read a row")
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(col).op("read a row")
            }
            fn text(&self, col: &str) -> Result<String, StoreError> {
                self.try_get(col).op("read a row")
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
                self.try_get(col).op("read a row")
            }
            fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError> {
                self.try_get(col).op("read a row")
            }
        }
    };
}
impl_columns!(SqliteRow);
impl_columns!(PgRow);

/// Seconds since the Unix epoch, as stored.
fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A time as the audit trail's objects show it (RFC 3339, seconds).
fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::from_second(secs(t)).map_or_else(|_| secs(t).to_string(), |t| t.to_string())
}

/// A stored time.
fn time(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn duration_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound { what }
}

impl Store {
    fn new(backend: Backend, sealer: Sealer, passwords: Passwords, created: bool) -> Self {
        Self {
            backend,
            sealer,
            passwords,
            rng: SystemRandom::new(),
            created,
            audit_ingest: audit_ingest::Handle::default(),
        }
    }

    /// Whether this start created the store (a first start): the caller bootstraps from here.
    pub fn created(&self) -> bool {
        self.created
    }

    /// `sqlite` or `postgres`.
    pub fn database_kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The password hasher this store uses.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        with_db!(self, |pool, _begin| pool.close().await);
    }

    fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, StoreError> {
        self.sealer
            .seal(plaintext, context)
            .map_err(|source| StoreError::Seal {
                what: context.to_owned(),
                source,
            })
    }

    fn unseal(&self, sealed: &[u8], context: &str) -> Result<SecretBytes, StoreError> {
        self.sealer
            .open(sealed, context)
            .map_err(|source| StoreError::Seal {
                what: context.to_owned(),
                source,
            })
    }

    fn unseal_text(&self, sealed: &[u8], context: &str) -> Result<Secret, StoreError> {
        let bytes = self.unseal(sealed, context)?;
        let text = std::str::from_utf8(bytes.expose()).map_err(|_| StoreError::InvalidRow {
            what: format!("{context} (not UTF-8)"),
        })?;
        Ok(Secret::new(text))
    }

    // ---------------------------------------------------------------- shapes shared by methods

    /// The row `sql` finds with `key` bound to `$1`, mapped by `from`; when there is none,
    /// [`StoreError::NotFound`] names it `"{what} {key:?}"`.
    async fn fetch_one<T>(
        &self,
        sql: &'static str,
        key: &str,
        op: &'static str,
        what: &'static str,
        from: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(sql)
                .bind(key)
                .fetch_optional(pool)
                .await
                .op(op)?;
            row.map_or_else(|| Err(not_found(format!("{what} {key:?}"))), |r| from(&r))
        })
    }

    /// All rows `sql` finds (with `key`, if given, bound to `$1`), mapped by `from`.
    async fn fetch_all<T>(
        &self,
        sql: &'static str,
        key: Option<&str>,
        op: &'static str,
        from: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        with_db!(self, |pool, _begin| {
            let query = sqlx::query(sql);
            let query = match key {
                Some(key) => query.bind(key),
                None => query,
            };
            query
                .fetch_all(pool)
                .await
                .op(op)?
                .iter()
                .map(|r| from(r))
                .collect()
        })
    }

    /// Deletes the row `sql` matches with `key` bound to `$1` and audits `action` on `target`;
    /// [`StoreError::NotFound`] names `target` when no row matched.
    #[allow(clippy::too_many_arguments)]
    async fn delete_one(
        &self,
        actor: &str,
        sql: &'static str,
        key: &str,
        op: &'static str,
        action: &'static str,
        target: String,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        write_tx!(self, secs(now), actor, |tx| {
            let deleted = sqlx::query(sql)
                .bind(key)
                .execute(&mut *tx)
                .await
                .op(op)?
                .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            ((), Entry::new(action, target))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_whole_seconds() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(time(secs(t)), t);
        assert_eq!(secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(time(-5), UNIX_EPOCH);
    }
}
