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

pub mod open;

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use infra_authz::policy::{
    Grant, NameError, Provider, ProviderKind, Resource, Secret, Subject, validate_dns_label,
    validate_role_name, validate_subject_name,
};

use crate::crypto::{SealError, Sealer, SecretBytes};
use crate::keys::{self, GenerateError, Presented};
use crate::oidc::PendingLogin;
use crate::passwords::{self, HashError, Passwords, PolicyError, Verification};

pub use open::{Database, OpenError, StoreConfig};

/// The PostgreSQL notification channel control replicas announce changes on.
const CHANGES_CHANNEL: &str = "infra_changes";

/// Failed logins before an account locks.
pub const LOCKOUT_FAILURES: i64 = 5;
/// How long a lock lasts, and the window in which failures add up.
pub const LOCKOUT_DURATION: Duration = Duration::from_mins(30);

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

/// Why a password login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The user is unknown, has no password, or the password is wrong: one answer for all, given
    /// in the same time.
    #[error("the user name or password is wrong")]
    InvalidCredentials,
    /// Too many failed logins for this name; refused until `until`.
    #[error("too many failed logins; try again later")]
    Locked {
        /// When the lock lifts.
        until: SystemTime,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an access key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Malformed, unknown, or the secret is wrong.
    #[error("the access key is not valid")]
    Invalid,
    /// The key's lifetime is over.
    #[error("the access key has expired")]
    Expired,
    /// The key was unused for longer than its inactivity timeout.
    #[error("the access key has expired from inactivity")]
    Inactive,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The store's id.
    pub id: i64,
    /// The name (usually an email address).
    pub name: String,
    /// Whether the user has a local password.
    pub has_password: bool,
    /// When the user was made.
    pub created_at: SystemTime,
    /// When the user was last changed.
    pub updated_at: SystemTime,
    /// The revision, for optimistic concurrency.
    pub revision: i64,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The store's id.
    pub id: i64,
    /// The name.
    pub name: String,
    /// When the group was made.
    pub created_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// The store's id.
    pub id: i64,
    /// The grant.
    pub grant: Grant,
    /// When it was made.
    pub created_at: SystemTime,
    /// Who made it.
    pub created_by: String,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

/// What an access key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// Made by a login, for the CLI.
    Session,
    /// Made on purpose, for a machine or a script.
    Api,
}

impl KeyKind {
    /// The name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Api => "api",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "session" => Ok(Self::Session),
            "api" => Ok(Self::Api),
            other => Err(StoreError::InvalidRow {
                what: format!("access key kind {other:?}"),
            }),
        }
    }
}

/// What a new access key should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessKey {
    /// A name for people to tell keys apart.
    pub name: String,
    /// What it is for.
    pub kind: KeyKind,
    /// When it lapses, if ever.
    pub expires_at: Option<SystemTime>,
    /// It lapses when unused for this long, if set.
    pub inactivity_timeout: Option<Duration>,
}

impl NewAccessKey {
    /// A login session's key: 30 days, or 3 days unused.
    pub fn session(now: SystemTime) -> Self {
        Self {
            name: "session".to_owned(),
            kind: KeyKind::Session,
            expires_at: Some(now + keys::SESSION_EXPIRY),
            inactivity_timeout: Some(keys::SESSION_INACTIVITY),
        }
    }
}

/// An access key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The public id, the part before the `.`.
    pub id: String,
    /// Whose key it is.
    pub user: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub kind: KeyKind,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it lapses, if ever.
    pub expires_at: Option<SystemTime>,
    /// It lapses when unused for this long, if set.
    pub inactivity_timeout: Option<Duration>,
    /// When it was last used (or made).
    pub last_used_at: SystemTime,
}

impl AccessKey {
    /// Why the key is not usable at `now`, if it is not.
    pub fn lapsed(&self, now: SystemTime) -> Option<KeyError> {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Some(KeyError::Expired);
        }
        if self
            .inactivity_timeout
            .is_some_and(|t| now >= self.last_used_at + t)
        {
            return Some(KeyError::Inactive);
        }
        None
    }
}

/// An identity provider as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProvider {
    /// The store's id.
    pub id: i64,
    /// The provider, with its client secret opened.
    pub provider: Provider,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

/// A user's session with an identity provider: the refresh token that lets the control plane
/// check, at a bounded interval, that the provider still knows the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpSession {
    /// The store's id.
    pub id: i64,
    /// The user.
    pub user: String,
    /// The provider.
    pub provider: String,
    /// The refresh token (opened).
    pub refresh_token: Secret,
    /// When the session was made.
    pub created_at: SystemTime,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// When the provider last confirmed the user.
    pub last_checked_at: SystemTime,
}

/// What a destination reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDestination {
    /// The destination's name (a DNS label).
    pub name: String,
    /// Where its proxy is reached.
    pub url: String,
    /// The CA certificate(s) of its proxy, PEM.
    pub ca_pem: String,
    /// The proxy's version.
    pub version: String,
}

/// A destination (a cluster with its proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The store's id.
    pub id: i64,
    /// The name.
    pub name: String,
    /// Where its proxy is reached.
    pub url: String,
    /// The CA certificate(s) of its proxy, PEM.
    pub ca_pem: String,
    /// The proxy's version.
    pub version: String,
    /// When the proxy was last heard from.
    pub last_seen_at: Option<SystemTime>,
    /// When it was registered.
    pub created_at: SystemTime,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

/// A new token signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSigningKey {
    /// The key id (`kid`).
    pub kid: String,
    /// The JOSE algorithm (`EdDSA`).
    pub algorithm: String,
    /// The public half (as published in the JWKS).
    pub public_key: Vec<u8>,
    /// The private half (PKCS#8); sealed at rest.
    pub private_key: SecretBytes,
}

/// A token signing key as stored, private half opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The key id (`kid`).
    pub kid: String,
    /// The JOSE algorithm.
    pub algorithm: String,
    /// The public half.
    pub public_key: Vec<u8>,
    /// The private half.
    pub private_key: SecretBytes,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it stopped signing (it is still published until deleted).
    pub retired_at: Option<SystemTime>,
}

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

/// Failed logins counted for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    /// Failures in the current window.
    pub failures: i64,
    /// When set, logins are refused until then.
    pub locked_until: Option<SystemTime>,
}

/// How many expired things a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Grants.
    pub grants: u64,
    /// Access keys.
    pub access_keys: u64,
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
            Backend::Sqlite($pool) => {
                let $begin: &'static str = "BEGIN IMMEDIATE";
                let _ = $begin;
                $body
            }
            Backend::Postgres($pool) => {
                let $begin: &'static str = "BEGIN";
                let _ = $begin;
                $body
            }
        }
    };
}

/// Appends to the audit log inside the transaction `$tx`.
macro_rules! audit {
    ($tx:ident, $at:expr, $actor:expr, $action:expr, $target:expr) => {
        audit!($tx, $at, $actor, $action, $target, String::new())
    };
    ($tx:ident, $at:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($at)
        .bind($actor.to_owned())
        .bind($action)
        .bind($target)
        .bind($detail)
        .execute(&mut *$tx)
        .await
        .op("append to the audit log")?
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
            (Some(r), Some(expected)) => StoreError::Conflict {
                what,
                expected,
                actual: r.int("revision")?,
            },
            _ => not_found(what),
        }
    }};
}

macro_rules! user_columns {
    () => {
        "id, name, password_hash, created_at, updated_at, revision"
    };
}
macro_rules! grant_columns {
    () => {
        "id, subject_kind, subject_name, role, destination, namespace, expires_at, created_at, \
         created_by, updated_at, revision"
    };
}
macro_rules! key_columns {
    () => {
        "k.id, u.name AS user_name, k.name, k.kind, k.created_at, k.expires_at, \
         k.inactivity_timeout, k.last_used_at"
    };
}
macro_rules! provider_columns {
    () => {
        "id, name, kind, url, client_id, client_secret, scopes, created_at, updated_at, revision"
    };
}
macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.provider_id, u.name AS user_name, p.name AS provider_name, \
         s.refresh_token, s.created_at, s.updated_at, s.last_checked_at"
    };
}
macro_rules! destination_columns {
    () => {
        "id, name, url, ca_pem, version, last_seen_at, created_at, updated_at, revision"
    };
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

/// A stored time.
fn time(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn duration_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn subject_parts(subject: &Subject) -> (&'static str, &str) {
    match subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    }
}

fn grant_target(grant: &Grant) -> String {
    format!("{} {} {}", grant.subject, grant.role, grant.resource)
}

fn validate_grant(grant: &Grant) -> Result<(), StoreError> {
    let (_, name) = subject_parts(&grant.subject);
    validate_subject_name(name)?;
    validate_role_name(&grant.role)?;
    // Parsing the displayed form checks both labels the way the policy file does.
    grant.resource.to_string().parse::<Resource>()?;
    Ok(())
}

fn user_from(row: &dyn Columns) -> Result<User, StoreError> {
    Ok(User {
        id: row.int("id")?,
        name: row.text("name")?,
        has_password: row.opt_text("password_hash")?.is_some(),
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
        revision: row.int("revision")?,
    })
}

fn group_from(row: &dyn Columns) -> Result<Group, StoreError> {
    Ok(Group {
        id: row.int("id")?,
        name: row.text("name")?,
        created_at: time(row.int("created_at")?),
        revision: row.int("revision")?,
    })
}

fn grant_from(row: &dyn Columns) -> Result<StoredGrant, StoreError> {
    let name = row.text("subject_name")?;
    let subject = match row.text("subject_kind")?.as_str() {
        "user" => Subject::User(name),
        "group" => Subject::Group(name),
        other => {
            return Err(StoreError::InvalidRow {
                what: format!("grant subject kind {other:?}"),
            });
        }
    };
    let namespace = row.text("namespace")?;
    Ok(StoredGrant {
        id: row.int("id")?,
        grant: Grant {
            subject,
            role: row.text("role")?,
            resource: Resource {
                destination: row.text("destination")?,
                namespace: (!namespace.is_empty()).then_some(namespace),
            },
            expires_at: row.opt_int("expires_at")?.map(time),
        },
        created_at: time(row.int("created_at")?),
        created_by: row.text("created_by")?,
        updated_at: time(row.int("updated_at")?),
        revision: row.int("revision")?,
    })
}

fn key_from(row: &dyn Columns) -> Result<AccessKey, StoreError> {
    Ok(AccessKey {
        id: row.text("id")?,
        user: row.text("user_name")?,
        name: row.text("name")?,
        kind: KeyKind::parse(&row.text("kind")?)?,
        created_at: time(row.int("created_at")?),
        expires_at: row.opt_int("expires_at")?.map(time),
        inactivity_timeout: row
            .opt_int("inactivity_timeout")?
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        last_used_at: time(row.int("last_used_at")?),
    })
}

fn destination_from(row: &dyn Columns) -> Result<Destination, StoreError> {
    Ok(Destination {
        id: row.int("id")?,
        name: row.text("name")?,
        url: row.text("url")?,
        ca_pem: row.text("ca_pem")?,
        version: row.text("version")?,
        last_seen_at: row.opt_int("last_seen_at")?.map(time),
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
        revision: row.int("revision")?,
    })
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

fn provider_context(name: &str) -> String {
    format!("provider:{name}:client_secret")
}

fn session_context(user_id: i64, provider_id: i64) -> String {
    format!("idp_session:{user_id}:{provider_id}:refresh_token")
}

fn signing_key_context(kid: &str) -> String {
    format!("signing_key:{kid}:private_key")
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
        let at = secs(now);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let deleted = sqlx::query(sql)
                .bind(key)
                .execute(&mut *tx)
                .await
                .op(op)?
                .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            audit!(tx, at, actor, action, target);
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    /// Deletes a user or a group, and the grants to it.
    async fn delete_subject(
        &self,
        actor: &str,
        subject: &Subject,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (kind, name) = subject_parts(subject);
        let (sql, op, grants_sql, grants_op, action) = match subject {
            Subject::User(_) => (
                "DELETE FROM users WHERE name = $1",
                "delete a user",
                "DELETE FROM grants WHERE subject_kind = 'user' AND subject_name = $1",
                "delete a user's grants",
                "user.delete",
            ),
            Subject::Group(_) => (
                "DELETE FROM user_groups WHERE name = $1",
                "delete a group",
                "DELETE FROM grants WHERE subject_kind = 'group' AND subject_name = $1",
                "delete a group's grants",
                "group.delete",
            ),
        };
        let at = secs(now);
        let target = format!("{kind} {name:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let deleted = sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .op(op)?
                .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            let grants = sqlx::query(grants_sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .op(grants_op)?
                .rows_affected();
            audit!(
                tx,
                at,
                actor,
                action,
                target,
                format!("grants removed: {grants}")
            );
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- users

    /// Creates a user without a password.
    pub async fn create_user(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<User, StoreError> {
        validate_subject_name(name)?;
        let at = secs(now);
        let target = format!("user {name:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "INSERT INTO users (name, created_at, updated_at) VALUES ($1, $2, $2) ",
                "ON CONFLICT (name) DO NOTHING RETURNING ",
                user_columns!()
            ))
            .bind(name)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("create a user")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists { what: target });
            };
            let user = user_from(&row)?;
            audit!(tx, at, actor, "user.create", target);
            tx.commit().await.op("commit")?;
            Ok(user)
        })
    }

    /// The user called `name`.
    pub async fn get_user(&self, name: &str) -> Result<User, StoreError> {
        self.fetch_one(
            concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"),
            name,
            "read a user",
            "user",
            user_from,
        )
        .await
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.fetch_all(
            concat!("SELECT ", user_columns!(), " FROM users ORDER BY name"),
            None,
            "list users",
            user_from,
        )
        .await
    }

    /// Deletes a user with their memberships, access keys, provider sessions and grants.
    pub async fn delete_user(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_subject(actor, &Subject::User(name.to_owned()), now)
            .await
    }

    /// Sets a user's password, after checking it against the policy. Clears the user's failed
    /// logins.
    pub async fn set_password(
        &self,
        actor: &str,
        name: &str,
        password: &Secret,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        passwords::check_policy(password.expose(), name)?;
        let hash = self.passwords.hash(password).await?;
        let at = secs(now);
        let target = format!("user {name:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let updated = sqlx::query(
                "UPDATE users SET password_hash = $1, updated_at = $2, revision = revision + 1 \
                 WHERE name = $3",
            )
            .bind(hash)
            .bind(at)
            .bind(name)
            .execute(&mut *tx)
            .await
            .op("set a password")?
            .rows_affected();
            if updated == 0 {
                return Err(not_found(target));
            }
            sqlx::query("DELETE FROM login_failures WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .op("clear failed logins")?;
            audit!(tx, at, actor, "user.password.set", target);
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    async fn password_hash(&self, name: &str) -> Result<Option<(i64, String)>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .op("read a password hash")?;
            match row {
                Some(row) => Ok(row
                    .opt_text("password_hash")?
                    .map(|h| row.int("id").map(|id| (id, h)))
                    .transpose()?),
                None => Ok(None),
            }
        })
    }

    /// Logs in with a password.
    ///
    /// A locked name is refused without looking at the password. An unknown user, a user
    /// without a password and a wrong password all give [`LoginError::InvalidCredentials`],
    /// after the same Argon2id work (a dummy hash stands in), and all count as a failure for
    /// the name. The [`LOCKOUT_FAILURES`]th failure within [`LOCKOUT_DURATION`] locks the name
    /// for [`LOCKOUT_DURATION`]. Success clears the count, and rehashes the password when the
    /// stored hash has other parameters.
    pub async fn login_with_password(
        &self,
        name: &str,
        password: &Secret,
        now: SystemTime,
    ) -> Result<User, LoginError> {
        if let Some(until) = self.locked_until(name, now).await? {
            return Err(LoginError::Locked { until });
        }
        let stored = self.password_hash(name).await?;
        let verdict = self
            .passwords
            .verify(password, stored.as_ref().map(|(_, h)| h.as_str()))
            .await;
        let (Verification::Match { needs_rehash }, Some((id, old_hash))) = (verdict, stored) else {
            let failures = self.record_login_failure(name, now).await?;
            if let Some(until) = failures.locked_until
                && failures.failures == LOCKOUT_FAILURES
            {
                tracing::warn!(user = name, "too many failed logins; locked");
                self.append_audit(
                    "system",
                    "user.login.locked",
                    &format!("user {name:?}"),
                    &format!("until {}", secs(until)),
                    now,
                )
                .await?;
            }
            return Err(LoginError::InvalidCredentials);
        };
        self.clear_login_failures(name).await?;
        if needs_rehash {
            let hash = self
                .passwords
                .hash(password)
                .await
                .map_err(StoreError::from)?;
            with_db!(self, |pool, _begin| {
                sqlx::query(
                    "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
                )
                .bind(hash)
                .bind(id)
                .bind(old_hash)
                .execute(pool)
                .await
                .op("store a rehashed password")?;
            });
        }
        self.append_audit(
            name,
            "user.login",
            &format!("user {name:?}"),
            "password",
            now,
        )
        .await?;
        Ok(self.get_user(name).await?)
    }

    /// Whether `password` is `name`'s password (no lockout counting: for the policy file's
    /// reconcile, not for logins).
    pub async fn password_matches(
        &self,
        name: &str,
        password: &Secret,
    ) -> Result<bool, StoreError> {
        let stored = self.password_hash(name).await?;
        Ok(matches!(
            self.passwords
                .verify(password, stored.as_ref().map(|(_, h)| h.as_str()))
                .await,
            Verification::Match {
                needs_rehash: false
            }
        ))
    }

    /// When the lock on logins as `name` lifts, if it is locked at `now`.
    pub async fn locked_until(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query("SELECT locked_until FROM login_failures WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .op("read failed logins")?;
            let until = match row {
                Some(row) => row.opt_int("locked_until")?,
                None => None,
            };
            Ok(until.filter(|&u| u > secs(now)).map(time))
        })
    }

    /// Counts a failed login for `name` (known or not) and locks it on the
    /// [`LOCKOUT_FAILURES`]th failure within [`LOCKOUT_DURATION`]. Atomic, so replicas share
    /// one count.
    pub async fn record_login_failure(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<LoginFailures, StoreError> {
        let at = secs(now);
        let window = duration_secs(LOCKOUT_DURATION);
        // The window restarts when it is over (and no lock is set) or when a lock has lifted.
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "INSERT INTO login_failures (name, failures, window_start, locked_until) \
                 VALUES ($1, 1, $2, NULL) \
                 ON CONFLICT (name) DO UPDATE SET \
                   failures = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN 1 \
                     ELSE login_failures.failures + 1 END, \
                   window_start = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN $2 \
                     ELSE login_failures.window_start END, \
                   locked_until = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN NULL \
                     WHEN login_failures.failures + 1 >= $4 THEN $5 \
                     ELSE login_failures.locked_until END \
                 RETURNING failures, locked_until",
            )
            .bind(name)
            .bind(at)
            .bind(at - window)
            .bind(LOCKOUT_FAILURES)
            .bind(at + window)
            .fetch_one(pool)
            .await
            .op("count a failed login")?;
            Ok(LoginFailures {
                failures: row.int("failures")?,
                locked_until: row.opt_int("locked_until")?.map(time),
            })
        })
    }

    /// Forgets the failed logins of `name` (after a successful login, or by an admin).
    pub async fn clear_login_failures(&self, name: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query("DELETE FROM login_failures WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .op("clear failed logins")?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- groups

    /// Creates a group.
    pub async fn create_group(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<Group, StoreError> {
        validate_subject_name(name)?;
        let at = secs(now);
        let target = format!("group {name:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(
                "INSERT INTO user_groups (name, created_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at, revision",
            )
            .bind(name)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("create a group")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists { what: target });
            };
            let group = group_from(&row)?;
            audit!(tx, at, actor, "group.create", target);
            tx.commit().await.op("commit")?;
            Ok(group)
        })
    }

    /// The group called `name`.
    pub async fn get_group(&self, name: &str) -> Result<Group, StoreError> {
        self.fetch_one(
            "SELECT id, name, created_at, revision FROM user_groups WHERE name = $1",
            name,
            "read a group",
            "group",
            group_from,
        )
        .await
    }

    /// All groups, by name.
    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.fetch_all(
            "SELECT id, name, created_at, revision FROM user_groups ORDER BY name",
            None,
            "list groups",
            group_from,
        )
        .await
    }

    /// Deletes a group with its memberships and grants.
    pub async fn delete_group(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_subject(actor, &Subject::Group(name.to_owned()), now)
            .await
    }

    /// Adds `user` to `group`. `Ok(false)` when they were a member already.
    pub async fn add_member(
        &self,
        actor: &str,
        group: &str,
        user: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let at = secs(now);
        let target = format!("group {group:?} member {user:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let ids = sqlx::query(
                "SELECT (SELECT id FROM user_groups WHERE name = $1) AS group_id, \
                        (SELECT id FROM users WHERE name = $2) AS user_id",
            )
            .bind(group)
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .op("find a group and a user")?;
            let group_id = ids
                .opt_int("group_id")?
                .ok_or_else(|| not_found(format!("group {group:?}")))?;
            let user_id = ids
                .opt_int("user_id")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?;
            let added = sqlx::query(
                "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("add a group member")?
            .rows_affected();
            if added == 0 {
                return Ok(false);
            }
            audit!(tx, at, actor, "group.member.add", target);
            tx.commit().await.op("commit")?;
            Ok(true)
        })
    }

    /// Removes `user` from `group`. `Ok(false)` when they were not a member.
    pub async fn remove_member(
        &self,
        actor: &str,
        group: &str,
        user: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let at = secs(now);
        let target = format!("group {group:?} member {user:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let removed = sqlx::query(
                "DELETE FROM group_members \
                 WHERE group_id = (SELECT id FROM user_groups WHERE name = $1) \
                   AND user_id = (SELECT id FROM users WHERE name = $2)",
            )
            .bind(group)
            .bind(user)
            .execute(&mut *tx)
            .await
            .op("remove a group member")?
            .rows_affected();
            if removed == 0 {
                return Ok(false);
            }
            audit!(tx, at, actor, "group.member.remove", target);
            tx.commit().await.op("commit")?;
            Ok(true)
        })
    }

    /// The members of `group`, by name.
    pub async fn members(&self, group: &str) -> Result<Vec<String>, StoreError> {
        self.get_group(group).await?;
        self.fetch_all(
            "SELECT u.name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             WHERE g.name = $1 ORDER BY u.name",
            Some(group),
            "list group members",
            |r| r.text("name"),
        )
        .await
    }

    /// Every membership, as (user, group) pairs.
    pub async fn memberships(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.fetch_all(
            "SELECT u.name AS user_name, g.name AS group_name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             ORDER BY u.name, g.name",
            None,
            "list memberships",
            |r| Ok((r.text("user_name")?, r.text("group_name")?)),
        )
        .await
    }

    /// The groups `user` is a member of, by name.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.fetch_all(
            "SELECT g.name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             WHERE u.name = $1 ORDER BY g.name",
            Some(user),
            "list a user's groups",
            |r| r.text("name"),
        )
        .await
    }

    // ---------------------------------------------------------------- grants

    /// Creates a grant. [`StoreError::AlreadyExists`] when the same subject already has the
    /// same role on the same resource (whatever its expiry).
    pub async fn create_grant(
        &self,
        actor: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<StoredGrant, StoreError> {
        validate_grant(grant)?;
        let at = secs(now);
        let (kind, name) = subject_parts(&grant.subject);
        let target = grant_target(grant);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "INSERT INTO grants (subject_kind, subject_name, role, destination, namespace, ",
                "expires_at, created_at, created_by, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) ",
                "ON CONFLICT (subject_kind, subject_name, role, destination, namespace) ",
                "DO NOTHING RETURNING ",
                grant_columns!()
            ))
            .bind(kind)
            .bind(name)
            .bind(grant.role.as_str())
            .bind(grant.resource.destination.as_str())
            .bind(grant.resource.namespace.as_deref().unwrap_or(""))
            .bind(grant.expires_at.map(secs))
            .bind(at)
            .bind(actor.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .op("create a grant")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists {
                    what: format!("grant of {target}"),
                });
            };
            let stored = grant_from(&row)?;
            let detail = grant
                .expires_at
                .map_or_else(String::new, |e| format!("expires {}", secs(e)));
            audit!(tx, at, actor, "grant.create", target, detail);
            tx.commit().await.op("commit")?;
            Ok(stored)
        })
    }

    /// The grant with id `id` (expired or not).
    pub async fn get_grant(&self, id: i64) -> Result<StoredGrant, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .op("read a grant")?;
            row.map_or_else(|| Err(not_found(format!("grant {id}"))), |r| grant_from(&r))
        })
    }

    /// The grant of `role` on `resource` to `subject`, if there is one (expired or not).
    pub async fn find_grant(
        &self,
        subject: &Subject,
        role: &str,
        resource: &Resource,
    ) -> Result<Option<StoredGrant>, StoreError> {
        let (kind, name) = subject_parts(subject);
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE subject_kind = $1 AND subject_name = $2 AND role = $3 ",
                "AND destination = $4 AND namespace = $5"
            ))
            .bind(kind)
            .bind(name)
            .bind(role)
            .bind(resource.destination.as_str())
            .bind(resource.namespace.as_deref().unwrap_or(""))
            .fetch_optional(pool)
            .await
            .op("find a grant")?;
            row.map(|r| grant_from(&r)).transpose()
        })
    }

    /// The grants in force at `now`, oldest first.
    pub async fn list_grants(&self, now: SystemTime) -> Result<Vec<StoredGrant>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id"
            ))
            .bind(secs(now))
            .fetch_all(pool)
            .await
            .op("list grants")?
            .iter()
            .map(|r| grant_from(r))
            .collect()
        })
    }

    /// The grants in force at `now` on `destination` (all its namespaces), by id.
    pub async fn list_grants_on(
        &self,
        destination: &str,
        now: SystemTime,
    ) -> Result<Vec<StoredGrant>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE destination = $1 AND (expires_at IS NULL OR expires_at > $2) \
                 ORDER BY id"
            ))
            .bind(destination)
            .bind(secs(now))
            .fetch_all(pool)
            .await
            .op("list grants of a destination")?
            .iter()
            .map(|r| grant_from(r))
            .collect()
        })
    }

    /// Changes a grant's expiry, if the grant is still at `expected_revision`.
    pub async fn update_grant_expiry(
        &self,
        actor: &str,
        id: i64,
        expected_revision: i64,
        expires_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<StoredGrant, StoreError> {
        let at = secs(now);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "UPDATE grants SET expires_at = $1, updated_at = $2, revision = revision + 1 ",
                "WHERE id = $3 AND revision = $4 RETURNING ",
                grant_columns!()
            ))
            .bind(expires_at.map(secs))
            .bind(at)
            .bind(id)
            .bind(expected_revision)
            .fetch_optional(&mut *tx)
            .await
            .op("update a grant")?;
            let Some(row) = row else {
                return Err(revision_conflict!(
                    tx,
                    "SELECT revision FROM grants WHERE id = $1",
                    id,
                    "read a grant's revision",
                    format!("grant {id}"),
                    Some(expected_revision)
                ));
            };
            let stored = grant_from(&row)?;
            let detail = expires_at.map_or_else(
                || "expires never".to_owned(),
                |e| format!("expires {}", secs(e)),
            );
            audit!(
                tx,
                at,
                actor,
                "grant.update",
                grant_target(&stored.grant),
                detail
            );
            tx.commit().await.op("commit")?;
            Ok(stored)
        })
    }

    /// Deletes the grant `id`; with `expected_revision`, only if it is still at that revision.
    pub async fn delete_grant(
        &self,
        actor: &str,
        id: i64,
        expected_revision: Option<i64>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "DELETE FROM grants WHERE id = $1 AND ($2 IS NULL OR revision = $2) RETURNING ",
                grant_columns!()
            ))
            .bind(id)
            .bind(expected_revision)
            .fetch_optional(&mut *tx)
            .await
            .op("delete a grant")?;
            let Some(row) = row else {
                return Err(revision_conflict!(
                    tx,
                    "SELECT revision FROM grants WHERE id = $1",
                    id,
                    "read a grant's revision",
                    format!("grant {id}"),
                    expected_revision
                ));
            };
            let stored = grant_from(&row)?;
            audit!(tx, at, actor, "grant.delete", grant_target(&stored.grant));
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    /// Deletes the grant of `grant.role` on `grant.resource` to `grant.subject` (its expiry is
    /// not compared). [`StoreError::NotFound`] when there is none.
    pub async fn revoke_grant(
        &self,
        actor: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        let (kind, name) = subject_parts(&grant.subject);
        let target = grant_target(grant);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let deleted = sqlx::query(
                "DELETE FROM grants WHERE subject_kind = $1 AND subject_name = $2 AND role = $3 \
                 AND destination = $4 AND namespace = $5",
            )
            .bind(kind)
            .bind(name)
            .bind(grant.role.as_str())
            .bind(grant.resource.destination.as_str())
            .bind(grant.resource.namespace.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await
            .op("revoke a grant")?
            .rows_affected();
            if deleted == 0 {
                return Err(not_found(format!("grant of {target}")));
            }
            audit!(tx, at, actor, "grant.delete", target);
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    /// Deletes the grants and access keys that have expired by `now`.
    pub async fn purge_expired(&self, now: SystemTime) -> Result<Purged, StoreError> {
        let at = secs(now);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let grants = sqlx::query("DELETE FROM grants WHERE expires_at <= $1")
                .bind(at)
                .execute(&mut *tx)
                .await
                .op("purge expired grants")?
                .rows_affected();
            let access_keys = sqlx::query(
                "DELETE FROM access_keys WHERE expires_at <= $1 \
                 OR last_used_at + inactivity_timeout <= $1",
            )
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("purge expired access keys")?
            .rows_affected();
            if grants + access_keys > 0 {
                audit!(
                    tx,
                    at,
                    "system",
                    "purge.expired",
                    String::new(),
                    format!("grants: {grants}, access keys: {access_keys}")
                );
            }
            tx.commit().await.op("commit")?;
            Ok(Purged {
                grants,
                access_keys,
            })
        })
    }

    // ---------------------------------------------------------------- access keys

    /// Makes an access key for `user`. The returned secret (`<id>.<secret>`) is shown once; the
    /// store keeps only the SHA-256 of its secret part.
    pub async fn create_access_key(
        &self,
        actor: &str,
        user: &str,
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<(AccessKey, Secret), StoreError> {
        let key = keys::generate(&self.rng)?;
        let stored = self
            .insert_access_key(actor, user, &key.id, &key.hash, new, now)
            .await?;
        Ok((stored, key.key))
    }

    /// Stores an access key made elsewhere (the policy file's `accessKey`), as its hash.
    pub async fn import_access_key(
        &self,
        actor: &str,
        user: &str,
        key: &Secret,
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<AccessKey, StoreError> {
        let presented = Presented::parse(key.expose()).ok_or_else(|| StoreError::InvalidRow {
            what: "access key (it is not `<id>.<secret>`)".to_owned(),
        })?;
        self.insert_access_key(actor, user, presented.id, &presented.hash(), new, now)
            .await
    }

    async fn insert_access_key(
        &self,
        actor: &str,
        user: &str,
        id: &str,
        hash: &[u8],
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<AccessKey, StoreError> {
        let at = secs(now);
        let target = format!("access key {id:?} of user {user:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let user_id = sqlx::query("SELECT id FROM users WHERE name = $1")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await
                .op("find a user")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?
                .int("id")?;
            let inserted = sqlx::query(
                "INSERT INTO access_keys (id, user_id, name, kind, secret_hash, created_at, \
                 expires_at, inactivity_timeout, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(user_id)
            .bind(new.name.as_str())
            .bind(new.kind.as_str())
            .bind(hash.to_vec())
            .bind(at)
            .bind(new.expires_at.map(secs))
            .bind(new.inactivity_timeout.map(duration_secs))
            .execute(&mut *tx)
            .await
            .op("create an access key")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("access key {id:?}"),
                });
            }
            let detail = format!(
                "kind {}, expires {}",
                new.kind.as_str(),
                new.expires_at
                    .map_or_else(|| "never".to_owned(), |e| secs(e).to_string())
            );
            audit!(tx, at, actor, "access_key.create", target, detail);
            tx.commit().await.op("commit")?;
            Ok(AccessKey {
                id: id.to_owned(),
                user: user.to_owned(),
                name: new.name.clone(),
                kind: new.kind,
                created_at: time(at),
                expires_at: new.expires_at.map(|e| time(secs(e))),
                inactivity_timeout: new
                    .inactivity_timeout
                    .map(|d| Duration::from_secs(d.as_secs())),
                last_used_at: time(at),
            })
        })
    }

    /// Checks a presented key at `now` and marks it used. Returns the key and its user.
    pub async fn authenticate_access_key(
        &self,
        key: &Secret,
        now: SystemTime,
    ) -> Result<(AccessKey, User), KeyError> {
        let Some(presented) = Presented::parse(key.expose()) else {
            return Err(KeyError::Invalid);
        };
        let at = secs(now);
        let found = with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                key_columns!(),
                ", k.secret_hash, u.id AS u_id, u.name AS u_name, u.password_hash AS u_password_hash, ",
                "u.created_at AS u_created_at, u.updated_at AS u_updated_at, u.revision AS u_revision ",
                "FROM access_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1"
            ))
            .bind(presented.id)
            .fetch_optional(pool)
            .await
            .op("read an access key")?;
            row.map(|row| -> Result<_, StoreError> {
                let stored = key_from(&row)?;
                let hash = row.blob("secret_hash")?;
                let user = User {
                    id: row.int("u_id")?,
                    name: row.text("u_name")?,
                    has_password: row.opt_text("u_password_hash")?.is_some(),
                    created_at: time(row.int("u_created_at")?),
                    updated_at: time(row.int("u_updated_at")?),
                    revision: row.int("u_revision")?,
                };
                Ok((stored, hash, user))
            })
            .transpose()?
        });
        let Some((stored, hash, user)) = found else {
            // Same work as for a known id, though ids are not secret.
            let _ = presented.matches(&[0u8; keys::HASH_LEN]);
            return Err(KeyError::Invalid);
        };
        if !presented.matches(&hash) {
            return Err(KeyError::Invalid);
        }
        if let Some(lapsed) = stored.lapsed(now) {
            return Err(lapsed);
        }
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "UPDATE access_keys SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1",
            )
            .bind(at)
            .bind(stored.id.as_str())
            .execute(pool)
            .await
            .op("mark an access key used")?;
        });
        let stored = AccessKey {
            last_used_at: time(at.max(secs(stored.last_used_at))),
            ..stored
        };
        Ok((stored, user))
    }

    /// The access keys of `user`, oldest first.
    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKey>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM access_keys k JOIN users u ON u.id = k.user_id WHERE u.name = $1 ",
                "ORDER BY k.created_at, k.id"
            ),
            Some(user),
            "list access keys",
            key_from,
        )
        .await
    }

    /// Every access key of every user.
    pub async fn all_access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM access_keys k JOIN users u ON u.id = k.user_id ORDER BY k.id"
            ),
            None,
            "list access keys",
            key_from,
        )
        .await
    }

    /// Deletes the access key `id`.
    pub async fn delete_access_key(
        &self,
        actor: &str,
        id: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM access_keys WHERE id = $1",
            id,
            "delete an access key",
            "access_key.delete",
            format!("access key {id:?}"),
            now,
        )
        .await
    }

    // ---------------------------------------------------------------- providers

    fn provider_from(&self, row: &dyn Columns) -> Result<StoredProvider, StoreError> {
        let name = row.text("name")?;
        let kind = row.text("kind")?;
        let client_secret =
            self.unseal_text(&row.blob("client_secret")?, &provider_context(&name))?;
        Ok(StoredProvider {
            id: row.int("id")?,
            provider: Provider {
                kind: kind
                    .parse::<ProviderKind>()
                    .map_err(|_| StoreError::InvalidRow {
                        what: format!("provider kind {kind:?}"),
                    })?,
                url: row.text("url")?,
                client_id: row.text("client_id")?,
                client_secret,
                scopes: row
                    .text("scopes")?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                name,
            },
            created_at: time(row.int("created_at")?),
            updated_at: time(row.int("updated_at")?),
            revision: row.int("revision")?,
        })
    }

    /// Adds an identity provider; its client secret is sealed at rest.
    pub async fn create_provider(
        &self,
        actor: &str,
        provider: &Provider,
        now: SystemTime,
    ) -> Result<StoredProvider, StoreError> {
        validate_dns_label(&provider.name).map_err(|why| StoreError::InvalidRow {
            what: format!("provider name: {why}"),
        })?;
        let sealed = self.seal(
            provider.client_secret.expose().as_bytes(),
            &provider_context(&provider.name),
        )?;
        let at = secs(now);
        let target = format!("provider {:?}", provider.name);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "INSERT INTO providers (name, kind, url, client_id, client_secret, scopes, ",
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ",
                "ON CONFLICT (name) DO NOTHING RETURNING ",
                provider_columns!()
            ))
            .bind(provider.name.as_str())
            .bind(provider.kind.as_str())
            .bind(provider.url.as_str())
            .bind(provider.client_id.as_str())
            .bind(sealed)
            .bind(provider.scopes.join(" "))
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("create a provider")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists { what: target });
            };
            let stored = self.provider_from(&row)?;
            audit!(
                tx,
                at,
                actor,
                "provider.create",
                target,
                format!("url {}", provider.url)
            );
            tx.commit().await.op("commit")?;
            Ok(stored)
        })
    }

    /// The provider called `name`, client secret opened.
    pub async fn get_provider(&self, name: &str) -> Result<StoredProvider, StoreError> {
        self.fetch_one(
            concat!(
                "SELECT ",
                provider_columns!(),
                " FROM providers WHERE name = $1"
            ),
            name,
            "read a provider",
            "provider",
            |r| self.provider_from(r),
        )
        .await
    }

    /// All providers, by name.
    pub async fn list_providers(&self) -> Result<Vec<StoredProvider>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                provider_columns!(),
                " FROM providers ORDER BY name"
            ),
            None,
            "list providers",
            |r| self.provider_from(r),
        )
        .await
    }

    /// Replaces the provider called `provider.name`, if it is still at `expected_revision`.
    pub async fn update_provider(
        &self,
        actor: &str,
        provider: &Provider,
        expected_revision: i64,
        now: SystemTime,
    ) -> Result<StoredProvider, StoreError> {
        let sealed = self.seal(
            provider.client_secret.expose().as_bytes(),
            &provider_context(&provider.name),
        )?;
        let at = secs(now);
        let target = format!("provider {:?}", provider.name);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "UPDATE providers SET kind = $1, url = $2, client_id = $3, client_secret = $4, ",
                "scopes = $5, updated_at = $6, revision = revision + 1 ",
                "WHERE name = $7 AND revision = $8 RETURNING ",
                provider_columns!()
            ))
            .bind(provider.kind.as_str())
            .bind(provider.url.as_str())
            .bind(provider.client_id.as_str())
            .bind(sealed)
            .bind(provider.scopes.join(" "))
            .bind(at)
            .bind(provider.name.as_str())
            .bind(expected_revision)
            .fetch_optional(&mut *tx)
            .await
            .op("update a provider")?;
            let Some(row) = row else {
                return Err(revision_conflict!(
                    tx,
                    "SELECT revision FROM providers WHERE name = $1",
                    provider.name.as_str(),
                    "read a provider's revision",
                    target,
                    Some(expected_revision)
                ));
            };
            let stored = self.provider_from(&row)?;
            audit!(
                tx,
                at,
                actor,
                "provider.update",
                target,
                format!("url {}", provider.url)
            );
            tx.commit().await.op("commit")?;
            Ok(stored)
        })
    }

    /// Deletes the provider called `name`, with its users' sessions.
    pub async fn delete_provider(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM providers WHERE name = $1",
            name,
            "delete a provider",
            "provider.delete",
            format!("provider {name:?}"),
            now,
        )
        .await
    }

    // ---------------------------------------------------------------- identity-provider sessions

    fn session_from(&self, row: &dyn Columns) -> Result<IdpSession, StoreError> {
        let context = session_context(row.int("user_id")?, row.int("provider_id")?);
        Ok(IdpSession {
            id: row.int("id")?,
            user: row.text("user_name")?,
            provider: row.text("provider_name")?,
            refresh_token: self.unseal_text(&row.blob("refresh_token")?, &context)?,
            created_at: time(row.int("created_at")?),
            updated_at: time(row.int("updated_at")?),
            last_checked_at: time(row.int("last_checked_at")?),
        })
    }

    /// Records (or replaces) `user`'s session with `provider` after a login there; the refresh
    /// token is sealed at rest. The session counts as checked at `now`.
    pub async fn put_idp_session(
        &self,
        actor: &str,
        user: &str,
        provider: &str,
        refresh_token: &Secret,
        now: SystemTime,
    ) -> Result<IdpSession, StoreError> {
        let at = secs(now);
        let target = format!("session of user {user:?} with provider {provider:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let ids = sqlx::query(
                "SELECT (SELECT id FROM users WHERE name = $1) AS user_id, \
                        (SELECT id FROM providers WHERE name = $2) AS provider_id",
            )
            .bind(user)
            .bind(provider)
            .fetch_one(&mut *tx)
            .await
            .op("find a user and a provider")?;
            let user_id = ids
                .opt_int("user_id")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?;
            let provider_id = ids
                .opt_int("provider_id")?
                .ok_or_else(|| not_found(format!("provider {provider:?}")))?;
            let sealed = self.seal(
                refresh_token.expose().as_bytes(),
                &session_context(user_id, provider_id),
            )?;
            let row = sqlx::query(
                "INSERT INTO idp_sessions (user_id, provider_id, refresh_token, created_at, \
                 updated_at, last_checked_at) VALUES ($1, $2, $3, $4, $4, $4) \
                 ON CONFLICT (user_id, provider_id) DO UPDATE SET \
                 refresh_token = excluded.refresh_token, updated_at = excluded.updated_at, \
                 last_checked_at = excluded.last_checked_at \
                 RETURNING id, created_at",
            )
            .bind(user_id)
            .bind(provider_id)
            .bind(sealed)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .op("store a provider session")?;
            let session = IdpSession {
                id: row.int("id")?,
                user: user.to_owned(),
                provider: provider.to_owned(),
                refresh_token: refresh_token.clone(),
                created_at: time(row.int("created_at")?),
                updated_at: time(at),
                last_checked_at: time(at),
            };
            audit!(tx, at, actor, "idp_session.put", target);
            tx.commit().await.op("commit")?;
            Ok(session)
        })
    }

    /// `user`'s session with `provider`, refresh token opened.
    pub async fn get_idp_session(
        &self,
        user: &str,
        provider: &str,
    ) -> Result<IdpSession, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM idp_sessions s JOIN users u ON u.id = s.user_id ",
                "JOIN providers p ON p.id = s.provider_id WHERE u.name = $1 AND p.name = $2"
            ))
            .bind(user)
            .bind(provider)
            .fetch_optional(pool)
            .await
            .op("read a provider session")?;
            row.map_or_else(
                || {
                    Err(not_found(format!(
                        "session of user {user:?} with provider {provider:?}"
                    )))
                },
                |r| self.session_from(&r),
            )
        })
    }

    /// The sessions last checked at or before `before`, least recently checked first: the ones
    /// due for a check with their provider.
    pub async fn idp_sessions_due(
        &self,
        before: SystemTime,
        limit: u32,
    ) -> Result<Vec<IdpSession>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM idp_sessions s JOIN users u ON u.id = s.user_id ",
                "JOIN providers p ON p.id = s.provider_id WHERE s.last_checked_at <= $1 ",
                "ORDER BY s.last_checked_at, s.id LIMIT $2"
            ))
            .bind(secs(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .op("list provider sessions due")?
            .iter()
            .map(|r| self.session_from(r))
            .collect()
        })
    }

    /// Records that the provider confirmed session `id` at `now`, with the refresh token it
    /// handed back when it rotated it. Not audited: this is upkeep, not a control action.
    pub async fn mark_idp_session_checked(
        &self,
        id: i64,
        rotated_refresh_token: Option<&Secret>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query("SELECT user_id, provider_id FROM idp_sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .op("read a provider session")?
                .ok_or_else(|| not_found(format!("provider session {id}")))?;
            let sealed = rotated_refresh_token
                .map(|t| {
                    self.seal(
                        t.expose().as_bytes(),
                        &session_context(row.int("user_id")?, row.int("provider_id")?),
                    )
                })
                .transpose()?;
            sqlx::query(
                "UPDATE idp_sessions SET last_checked_at = $1, \
                 refresh_token = COALESCE($2, refresh_token), \
                 updated_at = CASE WHEN $2 IS NULL THEN updated_at ELSE $1 END WHERE id = $3",
            )
            .bind(at)
            .bind(sealed)
            .bind(id)
            .execute(&mut *tx)
            .await
            .op("mark a provider session checked")?;
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    /// Deletes `user`'s session with `provider` (logout, or the provider no longer knows them).
    pub async fn delete_idp_session(
        &self,
        actor: &str,
        user: &str,
        provider: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        let target = format!("session of user {user:?} with provider {provider:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let deleted = sqlx::query(
                "DELETE FROM idp_sessions \
                 WHERE user_id = (SELECT id FROM users WHERE name = $1) \
                   AND provider_id = (SELECT id FROM providers WHERE name = $2)",
            )
            .bind(user)
            .bind(provider)
            .execute(&mut *tx)
            .await
            .op("delete a provider session")?
            .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            audit!(tx, at, actor, "idp_session.delete", target);
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- destinations

    /// Registers a destination, or updates what it reports (URL, CA, version) and marks it
    /// seen at `now`.
    pub async fn put_destination(
        &self,
        actor: &str,
        destination: &NewDestination,
        now: SystemTime,
    ) -> Result<Destination, StoreError> {
        validate_dns_label(&destination.name).map_err(|why| StoreError::InvalidRow {
            what: format!("destination name: {why}"),
        })?;
        let at = secs(now);
        let target = format!("destination {:?}", destination.name);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let row = sqlx::query(concat!(
                "INSERT INTO destinations (name, url, ca_pem, version, last_seen_at, created_at, ",
                "updated_at) VALUES ($1, $2, $3, $4, $5, $5, $5) ",
                "ON CONFLICT (name) DO UPDATE SET url = excluded.url, ca_pem = excluded.ca_pem, ",
                "version = excluded.version, last_seen_at = excluded.last_seen_at, ",
                "updated_at = excluded.updated_at, revision = destinations.revision + 1 ",
                "RETURNING ",
                destination_columns!()
            ))
            .bind(destination.name.as_str())
            .bind(destination.url.as_str())
            .bind(destination.ca_pem.as_str())
            .bind(destination.version.as_str())
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .op("store a destination")?;
            let stored = destination_from(&row)?;
            audit!(
                tx,
                at,
                actor,
                "destination.put",
                target,
                format!("url {}, version {}", destination.url, destination.version)
            );
            tx.commit().await.op("commit")?;
            Ok(stored)
        })
    }

    /// Marks destination `name` seen at `now`, running `version`. Not audited (a heartbeat).
    pub async fn touch_destination(
        &self,
        name: &str,
        version: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            let updated = sqlx::query(
                "UPDATE destinations SET last_seen_at = $1, version = $2 WHERE name = $3",
            )
            .bind(secs(now))
            .bind(version)
            .bind(name)
            .execute(pool)
            .await
            .op("mark a destination seen")?
            .rows_affected();
            if updated == 0 {
                return Err(not_found(format!("destination {name:?}")));
            }
            Ok(())
        })
    }

    /// The destination called `name`.
    pub async fn get_destination(&self, name: &str) -> Result<Destination, StoreError> {
        self.fetch_one(
            concat!(
                "SELECT ",
                destination_columns!(),
                " FROM destinations WHERE name = $1"
            ),
            name,
            "read a destination",
            "destination",
            destination_from,
        )
        .await
    }

    /// All destinations, by name.
    pub async fn list_destinations(&self) -> Result<Vec<Destination>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                destination_columns!(),
                " FROM destinations ORDER BY name"
            ),
            None,
            "list destinations",
            destination_from,
        )
        .await
    }

    /// Deletes the destination called `name`.
    pub async fn delete_destination(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM destinations WHERE name = $1",
            name,
            "delete a destination",
            "destination.delete",
            format!("destination {name:?}"),
            now,
        )
        .await
    }

    // ---------------------------------------------------------------- signing keys

    /// Stores a new token signing key; its private half is sealed at rest.
    pub async fn add_signing_key(
        &self,
        actor: &str,
        key: &NewSigningKey,
        now: SystemTime,
    ) -> Result<SigningKey, StoreError> {
        let sealed = self.seal(key.private_key.expose(), &signing_key_context(&key.kid))?;
        let at = secs(now);
        let target = format!("signing key {:?}", key.kid);
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let inserted = sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_key, private_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING",
            )
            .bind(key.kid.as_str())
            .bind(key.algorithm.as_str())
            .bind(key.public_key.clone())
            .bind(sealed)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("store a signing key")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists { what: target });
            }
            audit!(
                tx,
                at,
                actor,
                "signing_key.create",
                target,
                key.algorithm.clone()
            );
            tx.commit().await.op("commit")?;
            Ok(SigningKey {
                kid: key.kid.clone(),
                algorithm: key.algorithm.clone(),
                public_key: key.public_key.clone(),
                private_key: key.private_key.clone(),
                created_at: time(at),
                retired_at: None,
            })
        })
    }

    /// All signing keys, oldest first, private halves opened.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.fetch_all(
            "SELECT kid, algorithm, public_key, private_key, created_at, retired_at \
             FROM signing_keys ORDER BY created_at, kid",
            None,
            "list signing keys",
            |row| {
                let kid = row.text("kid")?;
                Ok(SigningKey {
                    private_key: self
                        .unseal(&row.blob("private_key")?, &signing_key_context(&kid))?,
                    algorithm: row.text("algorithm")?,
                    public_key: row.blob("public_key")?,
                    created_at: time(row.int("created_at")?),
                    retired_at: row.opt_int("retired_at")?.map(time),
                    kid,
                })
            },
        )
        .await
    }

    /// Stops signing with key `kid` (it stays published until deleted).
    pub async fn retire_signing_key(
        &self,
        actor: &str,
        kid: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        let target = format!("signing key {kid:?}");
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            let updated = sqlx::query(
                "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1) WHERE kid = $2",
            )
            .bind(at)
            .bind(kid)
            .execute(&mut *tx)
            .await
            .op("retire a signing key")?
            .rows_affected();
            if updated == 0 {
                return Err(not_found(target));
            }
            audit!(tx, at, actor, "signing_key.retire", target);
            tx.commit().await.op("commit")?;
            Ok(())
        })
    }

    /// Deletes signing key `kid`.
    pub async fn delete_signing_key(
        &self,
        actor: &str,
        kid: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM signing_keys WHERE kid = $1",
            kid,
            "delete a signing key",
            "signing_key.delete",
            format!("signing key {kid:?}"),
            now,
        )
        .await
    }

    // ---------------------------------------------------------------- audit

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

impl Store {
    /// Tells the other control replicas sharing this PostgreSQL database that something changed
    /// (`payload` says what); nothing for SQLite, which has one control plane.
    pub async fn notify_change(&self, payload: &str) -> Result<(), StoreError> {
        if let Backend::Postgres(pool) = &self.backend {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(pool)
                .await
                .op("notify the other control replicas")?;
        }
        Ok(())
    }

    /// Calls `on_change` with the payload of every change another replica announces, for as
    /// long as the store lives (PostgreSQL only; returns at once for SQLite). Reconnects after
    /// a lost connection.
    pub async fn listen_changes(&self, on_change: impl Fn(&str) + Send) -> Result<(), StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(());
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .op("listen for the other control replicas")?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .op("listen for the other control replicas")?;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => on_change(notification.payload()),
                // The connection was lost and is being re-made: changes may have been missed.
                Ok(None) => on_change(""),
                Err(sqlx::Error::PoolClosed) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, "listening for the other control replicas failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The names `owner` manages (see the `managed` table).
    pub async fn managed(&self, owner: &str) -> Result<BTreeSet<String>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query("SELECT name FROM managed WHERE owner = $1")
                .bind(owner)
                .fetch_all(pool)
                .await
                .op("list what is managed")?
                .iter()
                .map(|r| r.text("name"))
                .collect()
        })
    }

    /// Whether `owner` manages `name`.
    pub async fn is_managed(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        with_db!(self, |pool, _begin| {
            Ok(
                sqlx::query("SELECT 1 AS one FROM managed WHERE owner = $1 AND name = $2")
                    .bind(owner)
                    .bind(name)
                    .fetch_optional(pool)
                    .await
                    .op("look up what is managed")?
                    .is_some(),
            )
        })
    }

    /// Records that `owner` manages exactly `names`.
    pub async fn set_managed(
        &self,
        owner: &str,
        names: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            sqlx::query("DELETE FROM managed WHERE owner = $1")
                .bind(owner)
                .execute(&mut *tx)
                .await
                .op("record what is managed")?;
            for name in names {
                sqlx::query("INSERT INTO managed (owner, name) VALUES ($1, $2)")
                    .bind(owner)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .op("record what is managed")?;
            }
            tx.commit().await.op("commit")
        })
    }

    /// Keeps a login in flight under `key` (see [`crate::oidc::state_key`]), after dropping expired
    /// ones. Answers false, keeping nothing, when `max` live logins are already in flight.
    pub async fn put_oidc_login(
        &self,
        key: &str,
        login: &PendingLogin,
        now: SystemTime,
        max: i64,
    ) -> Result<bool, StoreError> {
        with_db!(self, |pool, begin| {
            let mut tx = pool.begin_with(begin).await.op("begin a transaction")?;
            sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
                .bind(secs(now))
                .execute(&mut *tx)
                .await
                .op("drop expired logins")?;
            let live = sqlx::query("SELECT COUNT(*) AS n FROM oidc_logins")
                .fetch_one(&mut *tx)
                .await
                .op("count logins in flight")?
                .int("n")?;
            if live >= max {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO oidc_logins (state_sha256, provider, nonce, redirect_uri, \
                 code_challenge, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key)
            .bind(&login.provider)
            .bind(&login.nonce)
            .bind(&login.redirect_uri)
            .bind(&login.code_challenge)
            .bind(secs(login.expires_at))
            .execute(&mut *tx)
            .await
            .op("keep a login in flight")?;
            tx.commit().await.op("commit")?;
            Ok(true)
        })
    }

    /// Takes the login in flight under `key` out of the store: one caller gets it, on any
    /// replica; every later one gets `None`. Expiry is the caller's to check.
    pub async fn take_oidc_login(&self, key: &str) -> Result<Option<PendingLogin>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "DELETE FROM oidc_logins WHERE state_sha256 = $1 \
                 RETURNING provider, nonce, redirect_uri, code_challenge, expires_at",
            )
            .bind(key)
            .fetch_optional(pool)
            .await
            .op("take a login in flight")?;
            row.map(|r| {
                Ok(PendingLogin {
                    provider: r.text("provider")?,
                    nonce: r.text("nonce")?,
                    redirect_uri: r.text("redirect_uri")?,
                    code_challenge: r.text("code_challenge")?,
                    expires_at: time(r.int("expires_at")?),
                })
            })
            .transpose()
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

    #[test]
    fn keys_lapse_by_age_and_by_idleness() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let key = AccessKey {
            id: "id".into(),
            user: "u".into(),
            name: "session".into(),
            kind: KeyKind::Session,
            created_at: now,
            expires_at: Some(now + keys::SESSION_EXPIRY),
            inactivity_timeout: Some(keys::SESSION_INACTIVITY),
            last_used_at: now,
        };
        assert!(key.lapsed(now).is_none());
        let idle = now + keys::SESSION_INACTIVITY;
        assert!(matches!(key.lapsed(idle), Some(KeyError::Inactive)));
        let used = AccessKey {
            last_used_at: now + keys::SESSION_EXPIRY - Duration::from_secs(1),
            ..key
        };
        assert!(matches!(
            used.lapsed(now + keys::SESSION_EXPIRY),
            Some(KeyError::Expired)
        ));
    }

    #[test]
    fn grants_are_validated_like_the_policy_file() {
        let grant = |subject: Subject, role: &str, resource: Resource| Grant {
            subject,
            role: role.into(),
            resource,
            expires_at: None,
        };
        assert!(
            validate_grant(&grant(
                Subject::User("a@example.com".into()),
                "view",
                Resource::namespace("prod", "web")
            ))
            .is_ok()
        );
        assert!(
            validate_grant(&grant(
                Subject::Group("system:masters".into()),
                "view",
                Resource::destination("prod")
            ))
            .is_err()
        );
        assert!(
            validate_grant(&grant(
                Subject::User("a".into()),
                "a/b",
                Resource::destination("prod")
            ))
            .is_err()
        );
        assert!(
            validate_grant(&grant(
                Subject::User("a".into()),
                "view",
                Resource::destination("Prod")
            ))
            .is_err()
        );
    }
}
