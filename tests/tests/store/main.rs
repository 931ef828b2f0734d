//! The store, against real databases: each scenario is a test of its own on an SQLite file
//! (`sqlite_<scenario>`) and on a PostgreSQL 15 server that the test starts itself
//! (`postgres_<scenario>`: in a temporary folder, on a Unix socket, as `nobody` when the test
//! runs as root, since PostgreSQL refuses to run as root), each on a fresh store of its own, so
//! one failure hides no other. If PostgreSQL cannot be started, the test fails and says why; it
//! never skips.
//!
//! Also here: first start, refusals (missing, corrupt, foreign database; missing or wrong root
//! key), file modes, and the Argon2id cost on this machine.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use infra_authz::clock::{Clock as _, ManualClock};
use infra_authz::policy::{Grant, Secret, Subject};
use infra_control::Store;
use infra_control::crypto::RootKeySource;
use infra_control::passwords::Passwords;
use infra_control::store::StoreConfig;
use infra_tests::postgres as pg;
use sqlx::{Connection as _, Row as _};

/// The client address the store tests log in from.
pub(crate) const CLIENT: &str = "192.0.2.10";

mod audit;
mod audit_events;
mod audit_exports;
mod credentials;
mod hash_cost;
mod providers;
mod startup;
mod users;

use audit::audit_trail;
use audit_events::{audit_events, changes_show_before_and_after, unaudited_changes_are_not_made};
use audit_exports::audit_exports;
use credentials::{access_keys, passwords_and_lockout};
use providers::{destinations_and_signing_keys, oidc_logins_in_flight, providers_and_sessions};
use users::{grants, parallel_grant_calls, users_and_groups};

const T0: u64 = 1_700_000_000;

/// Cheap Argon2id costs for tests that do not measure time.
fn fast_passwords() -> Passwords {
    Passwords::new(256, 1, 1)
}

/// Direct access to the database, to check what is really stored.
enum Raw {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Raw {
    async fn bytes(&self, sql: &'static str, arg: &str) -> Vec<Vec<u8>> {
        self.rows(sql, arg, 0).await
    }

    async fn rows(&self, sql: &'static str, arg: &str, col: usize) -> Vec<Vec<u8>> {
        match self {
            Self::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("raw sqlite");
                let rows = sqlx::query(sql)
                    .bind(arg.to_owned())
                    .fetch_all(&mut conn)
                    .await
                    .expect("raw query");
                let out = rows
                    .iter()
                    .map(|r| {
                        r.try_get::<Option<Vec<u8>>, _>(col)
                            .map(Option::unwrap_or_default)
                            .or_else(|_| {
                                r.try_get::<Option<String>, _>(col)
                                    .map(|s| s.unwrap_or_default().into_bytes())
                            })
                            .or_else(|_| {
                                r.try_get::<Option<i64>, _>(col).map(|i| {
                                    i.map(|i| i.to_string()).unwrap_or_default().into_bytes()
                                })
                            })
                            .expect("a column")
                    })
                    .collect();
                conn.close().await.expect("close");
                out
            }
            Self::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("raw postgres");
                let rows = sqlx::query(sql)
                    .bind(arg.to_owned())
                    .fetch_all(&mut conn)
                    .await
                    .expect("raw query");
                let out = rows
                    .iter()
                    .map(|r| {
                        r.try_get::<Option<Vec<u8>>, _>(col)
                            .map(Option::unwrap_or_default)
                            .or_else(|_| {
                                r.try_get::<Option<String>, _>(col)
                                    .map(|s| s.unwrap_or_default().into_bytes())
                            })
                            .or_else(|_| {
                                r.try_get::<Option<i64>, _>(col).map(|i| {
                                    i.map(|i| i.to_string()).unwrap_or_default().into_bytes()
                                })
                            })
                            .expect("a column")
                    })
                    .collect();
                conn.close().await.expect("close");
                out
            }
        }
    }

    /// Runs `sql` (statements without parameters) as the database's owner.
    async fn exec(&self, sql: &'static str) {
        match self {
            Self::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("raw sqlite");
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .expect("raw sql");
                conn.close().await.expect("close");
            }
            Self::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("raw postgres");
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .expect("raw sql");
                conn.close().await.expect("close");
            }
        }
    }

    async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        let rows = self.rows(sql, arg, 0).await;
        String::from_utf8(rows.into_iter().next().expect("one row"))
            .expect("text")
            .parse()
            .expect("a number")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn user(name: &str) -> Subject {
    Subject::User(name.to_owned())
}

fn grant(subject: Subject, role: &str, resource: &str) -> Grant {
    Grant {
        subject,
        role: role.to_owned(),
        resource: resource.parse().expect("resource"),
        expires_at: None,
    }
}

/// What a scenario's fresh store holds when the scenario begins.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Nothing: the scenario makes its own users.
    Empty,
    /// What [`users_and_groups`] leaves, which the scenarios after it build on (they used to run
    /// after it on one store): the users alice and bob, both in the group Engineering.
    People,
}

/// Puts [`Start::People`] in a new store.
async fn people(store: &Store, clock: &ManualClock) {
    let now = clock.now();
    store
        .create_group("admin", "Engineering", now)
        .await
        .expect("group");
    for name in ["alice@example.com", "bob@example.com"] {
        store.create_user("admin", name, now).await.expect("user");
        store
            .add_member("admin", "Engineering", name, now)
            .await
            .expect("member");
    }
}

/// A database of one test's own: an SQLite file in a temporary folder, or a database made for
/// the test on a PostgreSQL server of its own (nextest runs every test in a process of its own,
/// so a server could not be shared between tests anyway).
struct TestDb {
    config: StoreConfig,
    raw: Raw,
    /// The SQLite file and the root key (for PostgreSQL, the root key only).
    dir: tempfile::TempDir,
    /// Stopped when dropped.
    server: Option<pg::Server>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            config: sqlite_config(dir.path()),
            raw: Raw::Sqlite(dir.path().join("infra.db")),
            dir,
            server: None,
        }
    }

    async fn postgres() -> Self {
        let server = pg::Server::start();
        server.create_database("store").await;
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            config: StoreConfig {
                passwords: fast_passwords(),
                ..StoreConfig::postgres(
                    Secret::new(server.url("store")),
                    RootKeySource::File(dir.path().join("root.key")),
                )
            },
            raw: Raw::Postgres(server.url("store")),
            dir,
            server: Some(server),
        }
    }

    /// Starts the store for the first time, which creates it, and puts `start` in it.
    async fn open(&self, start: Start, clock: &ManualClock) -> Store {
        let store = Store::open(&self.config).await.expect("open the store");
        assert!(store.created(), "a first start creates the store");
        match start {
            Start::Empty => {}
            Start::People => people(&store, clock).await,
        }
        store
    }

    /// After the scenario: a second start finds the store, and its files are private.
    async fn finish(&self, store: Store) {
        store.close().await;
        let again = Store::open(&self.config).await.expect("reopen");
        assert!(!again.created(), "a second start finds the store");
        assert!(again.get_user("alice@example.com").await.is_ok());
        again.close().await;
        if self.server.is_none() {
            assert_eq!(file_mode(&self.dir.path().join("infra.db")), 0o600);
        }
        assert_eq!(file_mode(&self.dir.path().join("root.key")), 0o600);
    }
}

/// A scenario as two tests, `$sqlite` and `$postgres`, each on a fresh store of its own that
/// begins as `$start` says; the scenario gets the store, its configuration, the clock (at
/// [`T0`]) and raw access to the database.
macro_rules! on_both_databases {
    (
        $sqlite:ident, $postgres:ident, $start:expr,
        |$store:ident, $config:ident, $clock:ident, $raw:ident| $scenario:expr
    ) => {
        on_both_databases!(
            @test $sqlite, TestDb::sqlite(), $start,
            |$store, $config, $clock, $raw| $scenario
        );
        on_both_databases!(
            @test $postgres, TestDb::postgres().await, $start,
            |$store, $config, $clock, $raw| $scenario
        );
    };
    (
        @test $name:ident, $db:expr, $start:expr,
        |$store:ident, $config:ident, $clock:ident, $raw:ident| $scenario:expr
    ) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let db = $db;
            let clock = ManualClock::at_unix(T0);
            let store = db.open($start, &clock).await;
            {
                let ($store, $config, $clock, $raw) = (&store, &db.config, &clock, &db.raw);
                $scenario.await;
            }
            db.finish(store).await;
        }
    };
}

on_both_databases!(
    sqlite_users_and_groups,
    postgres_users_and_groups,
    Start::Empty,
    |store, _config, clock, _raw| users_and_groups(store, clock)
);
on_both_databases!(
    sqlite_grants,
    postgres_grants,
    Start::People,
    |store, _config, clock, raw| grants(store, clock, raw)
);
on_both_databases!(
    sqlite_parallel_grant_calls,
    postgres_parallel_grant_calls,
    Start::People,
    |store, _config, clock, raw| parallel_grant_calls(store, clock, raw)
);
on_both_databases!(
    sqlite_access_keys,
    postgres_access_keys,
    Start::People,
    |store, _config, clock, raw| access_keys(store, clock, raw)
);
on_both_databases!(
    sqlite_providers_and_sessions,
    postgres_providers_and_sessions,
    Start::People,
    |store, _config, clock, raw| providers_and_sessions(store, clock, raw)
);
on_both_databases!(
    sqlite_destinations_and_signing_keys,
    postgres_destinations_and_signing_keys,
    Start::People,
    |store, _config, clock, raw| destinations_and_signing_keys(store, clock, raw)
);
on_both_databases!(
    sqlite_oidc_logins_in_flight,
    postgres_oidc_logins_in_flight,
    Start::People,
    |store, _config, clock, raw| oidc_logins_in_flight(store, clock, raw)
);
// The audit trail is checked for what the scenarios before it write, so it runs them first.
on_both_databases!(
    sqlite_audit_trail,
    postgres_audit_trail,
    Start::Empty,
    |store, _config, clock, raw| async {
        users_and_groups(store, clock).await;
        grants(store, clock, raw).await;
        parallel_grant_calls(store, clock, raw).await;
        access_keys(store, clock, raw).await;
        providers_and_sessions(store, clock, raw).await;
        destinations_and_signing_keys(store, clock, raw).await;
        audit_trail(store, clock).await;
    }
);
on_both_databases!(
    sqlite_audit_events,
    postgres_audit_events,
    Start::People,
    |store, _config, clock, _raw| audit_events(store, clock)
);
on_both_databases!(
    sqlite_changes_show_before_and_after,
    postgres_changes_show_before_and_after,
    Start::People,
    |store, _config, clock, _raw| changes_show_before_and_after(store, clock)
);
on_both_databases!(
    sqlite_audit_exports,
    postgres_audit_exports,
    Start::People,
    |store, _config, _clock, raw| audit_exports(store, raw)
);
on_both_databases!(
    sqlite_unaudited_changes_are_not_made,
    postgres_unaudited_changes_are_not_made,
    Start::People,
    |store, _config, clock, raw| unaudited_changes_are_not_made(store, clock, raw)
);
on_both_databases!(
    sqlite_passwords_and_lockout,
    postgres_passwords_and_lockout,
    Start::People,
    |store, config, clock, raw| passwords_and_lockout(store, config, clock, raw)
);

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn sqlite_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        passwords: fast_passwords(),
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("root.key")),
        )
    }
}
