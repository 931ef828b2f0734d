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

use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use ring::rand::SystemRandom;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, SqlSafeStr as _};

use infra_authz::policy::Secret;

use super::{Backend, Store};
use crate::crypto::{RootKey, RootKeyError, RootKeySource, SealError, Sealer};
use crate::passwords::Passwords;

/// The SQLite file header.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The `meta` row holding the root key check value.
const CHECK_KEY: &str = "root_key_check";
/// What the check value holds.
const CHECK_PLAINTEXT: &[u8] = b"infra root key check v1";
/// The sealing context of the check value.
const CHECK_CONTEXT: &str = "meta:root_key_check";
/// How long a statement waits for SQLite's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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

fn sqlite_migrator() -> Migrator {
    migrator([
        (
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        (
            "managed",
            include_str!("../../migrations/sqlite/0002_managed.sql"),
        ),
        (
            "oidc logins",
            include_str!("../../migrations/sqlite/0003_oidc_logins.sql"),
        ),
    ])
}

fn postgres_migrator() -> Migrator {
    migrator([
        (
            "init",
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        (
            "managed",
            include_str!("../../migrations/postgres/0002_managed.sql"),
        ),
        (
            "oidc logins",
            include_str!("../../migrations/postgres/0003_oidc_logins.sql"),
        ),
    ])
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

impl Store {
    /// Opens the store, creating it only on a first start (see the module docs), and runs the
    /// embedded migrations.
    pub async fn open(config: &StoreConfig) -> Result<Self, OpenError> {
        match &config.database {
            Database::Sqlite(path) => open_sqlite(config, path).await,
            Database::Postgres(url) => open_postgres(config, url).await,
        }
    }
}

fn sqlite_options(path: &Path, journal: SqliteJournalMode) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(journal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
}

async fn sqlite_tables(pool: &SqlitePool, opening: &Opening<'_>) -> Result<Vec<String>, OpenError> {
    let rows = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(|e| corrupt_or(opening, e, "list tables"))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<_, _>>()
        .map_err(opening.query("list tables"))
}

/// SQLite's own verdict that a file is damaged becomes [`OpenError::Corrupt`].
fn corrupt_or(opening: &Opening<'_>, e: sqlx::Error, operation: &'static str) -> OpenError {
    let corrupt = e
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|code| {
            // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26), with or without extended bits.
            let primary = code.parse::<i32>().map_or(-1, |c| c & 0xff);
            primary == 11 || primary == 26
        });
    if corrupt {
        OpenError::Corrupt {
            what: opening.what.clone(),
            why: e.to_string(),
        }
    } else {
        (opening.query(operation))(e)
    }
}

async fn open_sqlite(config: &StoreConfig, path: &Path) -> Result<Store, OpenError> {
    let opening = Opening {
        config,
        what: format!("the SQLite database {}", path.display()),
        rng: SystemRandom::new(),
    };
    let exists = path.try_exists().map_err(|source| OpenError::InspectFile {
        path: path.to_owned(),
        source,
    })?;
    let created = if exists {
        false
    } else {
        opening.may_create()?;
        create_sqlite(&opening, path).await?;
        true
    };
    check_sqlite_file(&opening, path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .connect_with(sqlite_options(path, SqliteJournalMode::Wal))
        .await
        .map_err(|e| match corrupt_or(&opening, e, "connect") {
            OpenError::Query { what, source, .. } => OpenError::Connect { what, source },
            other => other,
        })?;
    let verdict: Vec<String> = sqlx::query("PRAGMA quick_check")
        .fetch_all(&pool)
        .await
        .map_err(|e| corrupt_or(&opening, e, "check integrity"))?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(opening.query("check integrity"))?;
    if verdict != ["ok"] {
        pool.close().await;
        return Err(OpenError::Corrupt {
            what: opening.what.clone(),
            why: format!("integrity check: {}", verdict.join("; ")),
        });
    }
    let tables = sqlite_tables(&pool, &opening).await?;
    let contents = Contents::of(&tables);
    // A file we did not just make is never "empty": SQLite would take a zero-length or
    // table-less file as a new database, and that is exactly the data loss to refuse.
    if contents == Contents::Empty && !created {
        pool.close().await;
        return Err(OpenError::DatabaseMissing {
            what: opening.what.clone(),
            root_key: config.root_key.to_string(),
        });
    }
    let result = prepare_store!(&opening, &pool, contents, sqlite_migrator());
    let (sealer, _) = match result {
        Ok(done) => done,
        Err(e) => {
            pool.close().await;
            return Err(e);
        }
    };
    Ok(Store::new(
        Backend::Sqlite(pool),
        sealer,
        config.passwords.clone(),
        created,
    ))
}

/// Checks an existing file before SQLite sees it: readable, an SQLite header, mode 0600.
fn check_sqlite_file(opening: &Opening<'_>, path: &Path) -> Result<(), OpenError> {
    let inspect = |source| OpenError::InspectFile {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(inspect)?;
    let meta = file.metadata().map_err(inspect)?;
    if !meta.is_file() {
        return Err(OpenError::Corrupt {
            what: opening.what.clone(),
            why: "it is not a regular file".to_owned(),
        });
    }
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]).map_err(inspect)? {
            0 => break,
            n => read += n,
        }
    }
    if read == 0 {
        return Err(OpenError::Corrupt {
            what: opening.what.clone(),
            why: "the file is empty".to_owned(),
        });
    }
    if read < header.len() || &header != SQLITE_MAGIC {
        return Err(OpenError::Corrupt {
            what: opening.what.clone(),
            why: "it does not start with the SQLite header; it is not an SQLite database"
                .to_owned(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "the store file was readable by others; setting its mode to 0600"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(inspect)?;
    }
    Ok(())
}

/// Builds a new store at `<path>.new` and renames it into place.
async fn create_sqlite(opening: &Opening<'_>, path: &Path) -> Result<(), OpenError> {
    let file_name = path
        .file_name()
        .map_or_else(|| "infra.db".into(), |n| n.to_string_lossy().into_owned());
    let staging = path.with_file_name(format!("{file_name}.new"));
    let create = |source| OpenError::CreateFile {
        path: staging.clone(),
        source,
    };
    for leftover in ["", "-journal", "-wal", "-shm"] {
        let stale = PathBuf::from(format!("{}{leftover}", staging.display()));
        match std::fs::remove_file(&stale) {
            Ok(()) => {
                tracing::info!(path = %stale.display(), "removed a leftover of an interrupted first start");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OpenError::CreateFile {
                    path: stale,
                    source,
                });
            }
        }
    }
    // Made here with mode 0600 so SQLite never creates it with the umask's mode; its journal
    // files take the database file's mode.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .map_err(create)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(create)?;
    drop(file);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlite_options(&staging, SqliteJournalMode::Delete))
        .await
        .map_err(|source| OpenError::Connect {
            what: format!("the new SQLite database {}", staging.display()),
            source,
        })?;
    let result = prepare_store!(opening, &pool, Contents::Empty, sqlite_migrator());
    pool.close().await;
    result?;
    std::fs::rename(&staging, path).map_err(|source| OpenError::CreateFile {
        path: path.to_owned(),
        source,
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        // Make the rename durable; failing here is not worth refusing to start for.
        let _ = dir.sync_all();
    }
    tracing::info!(path = %path.display(), "created a new store (first start)");
    Ok(())
}

async fn open_postgres(config: &StoreConfig, url: &Secret) -> Result<Store, OpenError> {
    let options =
        PgConnectOptions::from_str(url.expose()).map_err(|source| OpenError::Connect {
            what: "the PostgreSQL database (its URL does not parse)".to_owned(),
            source,
        })?;
    let what = format!(
        "the PostgreSQL database {:?} at {}",
        options.get_database().unwrap_or(options.get_username()),
        options.get_socket().map_or_else(
            || format!("{}:{}", options.get_host(), options.get_port()),
            |s| s.display().to_string()
        ),
    );
    let opening = Opening {
        config,
        what,
        rng: SystemRandom::new(),
    };
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Connect {
            what: opening.what.clone(),
            source,
        })?;
    let result = async {
        let tables: Vec<String> = sqlx::query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .map_err(opening.query("list tables"))?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<_, _>>()
        .map_err(opening.query("list tables"))?;
        prepare_store!(&opening, &pool, Contents::of(&tables), postgres_migrator())
    }
    .await;
    match result {
        Ok((sealer, created)) => {
            if created {
                tracing::info!(database = %opening.what, "created a new store (first start)");
            }
            Ok(Store::new(
                Backend::Postgres(pool),
                sealer,
                config.passwords.clone(),
                created,
            ))
        }
        Err(e) => {
            pool.close().await;
            Err(e)
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
