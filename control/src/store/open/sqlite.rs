//! Opening an SQLite store: the file checks, the first start's staged file, the migrations.

use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::rand::SystemRandom;
use sqlx::Row as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    CHECK_CONTEXT, CHECK_KEY, CHECK_PLAINTEXT, Contents, OpenError, Opening, StoreConfig, migrator,
};
use crate::crypto::RootKey;
use crate::store::{Backend, Store};

/// The SQLite file header.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// How long a statement waits for SQLite's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn sqlite_migrator() -> Migrator {
    migrator([
        (
            "init",
            include_str!("../../../migrations/sqlite/0001_init.sql"),
        ),
        (
            "managed",
            include_str!("../../../migrations/sqlite/0002_managed.sql"),
        ),
        (
            "oidc logins",
            include_str!("../../../migrations/sqlite/0003_oidc_logins.sql"),
        ),
        (
            "login guards",
            include_str!("../../../migrations/sqlite/0004_login_guards.sql"),
        ),
        (
            "access requests",
            include_str!("../../../migrations/sqlite/0005_requests.sql"),
        ),
        (
            "audit events",
            include_str!("../../../migrations/sqlite/0006_audit_events.sql"),
        ),
        (
            "ended sessions",
            include_str!("../../../migrations/sqlite/0007_ended_sessions.sql"),
        ),
        (
            "audit exports",
            include_str!("../../../migrations/sqlite/0008_audit_exports.sql"),
        ),
    ])
}

fn sqlite_options(path: &Path, journal: SqliteJournalMode) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(journal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        // 16 MiB of page cache a connection (SQLite's default is 2 MiB): the audit trail's
        // indexes outgrow 2 MiB soon, and every page not in the cache is a read from the file.
        .pragma("cache_size", "-16384")
        // Checkpoint every 8,192 pages (32 MiB) of log rather than 1,000: a page that several
        // transactions change (the audit trail's index pages) is copied into the file once.
        .pragma("wal_autocheckpoint", "8192")
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

pub(super) async fn open(config: &StoreConfig, path: &Path) -> Result<Store, OpenError> {
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
