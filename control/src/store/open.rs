//! Opening the store: first start, corruption, migrations, the root key check.
//!
//! # First start, and what is refused
//!
//! A store is created empty only on a first start. What counts as one:
//!
//! | database | root key | what happens |
//! | --- | --- | --- |
//! | SQLite file missing | key file missing | first start: the key file (0600) and the database (0600) are created |
//! | SQLite file missing | present (a file, or the environment) | refused: the data may have been lost. Restore it, or remove the key file (or set [`StoreConfig::initialize`]) to start over |
//! | PostgreSQL database with no tables | key file missing | first start: key created, schema made |
//! | PostgreSQL database with no tables | present | refused, as above, unless [`StoreConfig::initialize`] |
//! | present | missing | refused: the sealed values could not be opened |
//! | present, not an SQLite file, or failing `PRAGMA quick_check` | | refused as corrupt |
//! | present, tables but not ours | | refused: not an Infra store |
//! | present, ours | does not open the check value | refused: wrong root key |
//!
//! A root key given in the environment exists whether or not a store was ever made with it,
//! so with one, a first start must be asked for with [`StoreConfig::initialize`] (which creates
//! a store only where there is none: it never replaces, repairs or ignores one).
//!
//! A new SQLite file is built beside its final path (`<file>.new`, rollback journal, so no WAL
//! file to carry along) and renamed into place only once its schema and root key check value
//! are written, so an interrupted first start leaves no half-made store to be mistaken for a
//! real one. A stale `<file>.new` is removed. The root key file is written just before that
//! rename; a start interrupted between the two is refused the next time like lost data, and
//! the refusal says to remove the key file if this was a first start.
//!
//! Migrations are embedded (`control/migrations/{sqlite,postgres}`) and run by sqlx's migrator at
//! every start, under its lock on PostgreSQL, so replicas starting together are safe.
//!
//! This file holds what both databases share (the configuration, the refusals, the root key
//! check); `open/sqlite.rs` and `open/postgres.rs` open each.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use ring::rand::SystemRandom;
use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use infra_authz::policy::Secret;

use super::Store;
use crate::crypto::{RootKey, RootKeyError, RootKeySource, SealError, Sealer};
use crate::passwords::Passwords;

/// The `meta` row holding the root key check value.
const CHECK_KEY: &str = "root_key_check";
/// What the check value holds.
const CHECK_PLAINTEXT: &[u8] = b"infra root key check v1";
/// The sealing context of the check value.
const CHECK_CONTEXT: &str = "meta:root_key_check";

/// Which database holds the store.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host/db`, or `?host=/socket/dir`). Secret,
    /// as it may hold a password.
    Postgres(Secret),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(_) => f.write_str("Postgres(<url redacted>)"),
        }
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The database.
    pub database: Database,
    /// Where the root key comes from.
    pub root_key: RootKeySource,
    /// Create the store when there is none even though the root key exists (needed for a first
    /// start with a root key from the environment). Never replaces or repairs a store.
    pub initialize: bool,
    /// The password hasher (the default takes about 150 ms a hash).
    pub passwords: Passwords,
    /// The most connections the pool keeps.
    pub max_connections: u32,
}

impl StoreConfig {
    /// A store in the SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>, root_key: RootKeySource) -> Self {
        Self {
            database: Database::Sqlite(path.into()),
            root_key,
            initialize: false,
            passwords: Passwords::default(),
            max_connections: 4,
        }
    }

    /// A store in the PostgreSQL database at `url`.
    pub fn postgres(url: Secret, root_key: RootKeySource) -> Self {
        Self {
            database: Database::Postgres(url),
            root_key,
            initialize: false,
            passwords: Passwords::default(),
            max_connections: 10,
        }
    }
}

/// Why the store would not open. Each says which database (never a password) and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Loading or creating the root key failed.
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    /// The database is missing or empty while the root key exists: data may have been lost.
    #[error(
        "{what} is missing or empty, but the {root_key} exists: refusing to start with an empty \
         store, since its data may have been lost. Restore the database from a backup; if this is \
         really a first start, remove the root key file or ask for initialization"
    )]
    DatabaseMissing {
        /// The database.
        what: String,
        /// Where the root key is.
        root_key: String,
    },
    /// The database exists but the root key does not.
    #[error(
        "{what} exists, but the {root_key} does not: the store's secrets could not be opened. \
         Restore the root key that belongs to this database"
    )]
    RootKeyMissing {
        /// The database.
        what: String,
        /// Where the root key should be.
        root_key: String,
    },
    /// Looking at the database file failed.
    #[error("cannot read {path}")]
    InspectFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Creating the database file failed.
    #[error("cannot create {path}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database is damaged.
    #[error("{what} is corrupt ({why}); refusing to start. Restore it from a backup")]
    Corrupt {
        /// The database.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The database holds tables, but not an Infra store's.
    #[error(
        "{what} is not an Infra store (it has tables, but no Infra schema); refusing to use it"
    )]
    Foreign {
        /// The database.
        what: String,
    },
    /// The root key does not open the store's check value.
    #[error("the {root_key} is not the key of {what}; refusing to start")]
    WrongRootKey {
        /// The database.
        what: String,
        /// Where the root key came from.
        root_key: String,
    },
    /// Connecting to the database failed.
    #[error("cannot open {what}")]
    Connect {
        /// The database.
        what: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Running the embedded migrations failed.
    #[error("cannot migrate {what} to this version's schema")]
    Migrate {
        /// The database.
        what: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A query while opening failed.
    #[error("cannot {operation} in {what}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The database.
        what: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Sealing the root key check value failed.
    #[error("cannot seal the root key check value")]
    Seal(#[source] SealError),
}

/// What a database holds, before anything is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// No tables at all.
    Empty,
    /// An Infra store (the migrations table is there).
    Ours,
    /// Tables, none of them ours.
    Foreign,
}

impl Contents {
    fn of(tables: &[String]) -> Self {
        if tables.is_empty() {
            Self::Empty
        } else if tables.iter().any(|t| t == "_sqlx_migrations") {
            Self::Ours
        } else {
            Self::Foreign
        }
    }
}

fn migrator<const N: usize>(steps: [(&'static str, &'static str); N]) -> Migrator {
    Migrator::with_migrations(
        (1..)
            .zip(steps)
            .map(|(version, (name, sql))| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// What a start knows while it opens the store.
struct Opening<'a> {
    config: &'a StoreConfig,
    what: String,
    rng: SystemRandom,
}

impl Opening<'_> {
    fn query(&self, operation: &'static str) -> impl FnOnce(sqlx::Error) -> OpenError + '_ {
        move |source| OpenError::Query {
            operation,
            what: self.what.clone(),
            source,
        }
    }

    fn migrate(&self) -> impl FnOnce(sqlx::migrate::MigrateError) -> OpenError + '_ {
        move |source| OpenError::Migrate {
            what: self.what.clone(),
            source,
        }
    }

    /// Refuses unless this may be a first start: no root key yet, or initialization asked for.
    fn may_create(&self) -> Result<(), OpenError> {
        if RootKey::exists(&self.config.root_key) && !self.config.initialize {
            return Err(OpenError::DatabaseMissing {
                what: self.what.clone(),
                root_key: self.config.root_key.to_string(),
            });
        }
        Ok(())
    }

    /// Loads the key of an existing store; it is never created here.
    fn existing_key(&self) -> Result<RootKey, OpenError> {
        if !RootKey::exists(&self.config.root_key) {
            return Err(OpenError::RootKeyMissing {
                what: self.what.clone(),
                root_key: self.config.root_key.to_string(),
            });
        }
        Ok(RootKey::load(&self.config.root_key, false, &self.rng)?.key)
    }

    fn sealer(&self, key: &RootKey) -> Sealer {
        Sealer::new(key, self.rng.clone())
    }

    /// Checks that `sealed` (the check value) opens under the root key.
    fn verify_check(&self, sealer: &Sealer, sealed: &[u8]) -> Result<(), OpenError> {
        match sealer.open(sealed, CHECK_CONTEXT) {
            Ok(plain) if plain.expose() == CHECK_PLAINTEXT => Ok(()),
            _ => Err(OpenError::WrongRootKey {
                what: self.what.clone(),
                root_key: self.config.root_key.to_string(),
            }),
        }
    }
}

/// Makes `pool` a usable store: checks what it holds, creates or checks the root key, runs the
/// migrations, writes or verifies the root key check value. A macro rather than a function
/// because the pool types differ while the SQL is the same.
macro_rules! prepare_store {
    ($opening:expr, $pool:expr, $contents:expr, $migrator:expr) => { async {
        let opening = $opening;
        let pool = $pool;
        let contents = $contents;
        let check_sql = "SELECT value FROM meta WHERE key = $1";
        let (sealer, created) = match contents {
            Contents::Foreign => {
                return Err(OpenError::Foreign {
                    what: opening.what.clone(),
                })
            }
            Contents::Empty => {
                opening.may_create()?;
                let loaded = RootKey::load(&opening.config.root_key, true, &opening.rng)?;
                (opening.sealer(&loaded.key), true)
            }
            Contents::Ours => {
                let sealer = opening.sealer(&opening.existing_key()?);
                // Check the key before changing anything; the meta table may not be there yet
                // when another replica is making the schema right now.
                let meta = sqlx::query(check_sql)
                    .bind(CHECK_KEY)
                    .fetch_optional(pool)
                    .await;
                if let Ok(Some(row)) = meta {
                    let sealed: Vec<u8> =
                        row.try_get("value").map_err(opening.query("read the root key check"))?;
                    opening.verify_check(&sealer, &sealed)?;
                }
                (sealer, false)
            }
        };
        $migrator.run(pool).await.map_err(opening.migrate())?;
        let row = sqlx::query(check_sql)
            .bind(CHECK_KEY)
            .fetch_optional(pool)
            .await
            .map_err(opening.query("read the root key check"))?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> =
                    row.try_get("value").map_err(opening.query("read the root key check"))?;
                opening.verify_check(&sealer, &sealed)?;
            }
            None => {
                // Only a store made in this start (or by a replica starting beside it) lacks
                // the check value.
                if !created {
                    opening.may_create()?;
                }
                let sealed = sealer
                    .seal(CHECK_PLAINTEXT, CHECK_CONTEXT)
                    .map_err(OpenError::Seal)?;
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(CHECK_KEY)
                .bind(sealed)
                .execute(pool)
                .await
                .map_err(opening.query("write the root key check"))?;
                let sealed: Vec<u8> = sqlx::query(check_sql)
                    .bind(CHECK_KEY)
                    .fetch_one(pool)
                    .await
                    .and_then(|row| row.try_get("value"))
                    .map_err(opening.query("read the root key check"))?;
                opening.verify_check(&sealer, &sealed)?;
            }
        }
        Ok::<_, OpenError>((sealer, created))
    }.await };
}

// The two openers come after `prepare_store!`, which they use.
mod postgres;
mod sqlite;

impl Store {
    /// Opens the store, creating it only on a first start (see the module docs), and runs the
    /// embedded migrations.
    pub async fn open(config: &StoreConfig) -> Result<Self, OpenError> {
        match &config.database {
            Database::Sqlite(path) => sqlite::open(config, path).await,
            Database::Postgres(url) => postgres::open(config, url).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_told_apart() {
        assert_eq!(Contents::of(&[]), Contents::Empty);
        assert_eq!(
            Contents::of(&["_sqlx_migrations".into(), "users".into()]),
            Contents::Ours
        );
        assert_eq!(Contents::of(&["customers".into()]), Contents::Foreign);
    }

    #[test]
    fn postgres_urls_never_debug_print() {
        let db = Database::Postgres(Secret::new("postgres://u:hunter2@h/db"));
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
