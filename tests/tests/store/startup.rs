//! First starts, restarts and refusals (missing, corrupt, foreign database; missing or wrong root
//! key) on SQLite and PostgreSQL.

use std::os::unix::fs::PermissionsExt as _;
use std::time::SystemTime;

use infra_authz::policy::Secret;
use infra_control::Store;
use infra_control::crypto::RootKeySource;
use infra_control::store::{Database, OpenError, StoreConfig};
use infra_tests::postgres as pg;
use sqlx::Connection as _;

use crate::{Raw, fast_passwords, file_mode, sqlite_config};

#[tokio::test]
async fn sqlite_first_start_makes_private_files_and_later_starts_find_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sqlite_config(dir.path());
    let store = Store::open(&config).await.expect("first start");
    assert!(store.created());
    assert_eq!(store.database_kind(), "sqlite");
    let db = dir.path().join("infra.db");
    assert_eq!(file_mode(&db), 0o600, "database file");
    assert_eq!(
        file_mode(&dir.path().join("root.key")),
        0o600,
        "root key file"
    );
    store
        .create_user("admin", "a@example.com", SystemTime::now())
        .await
        .expect("write");
    for journal in ["infra.db-wal", "infra.db-shm"] {
        let path = dir.path().join(journal);
        if path.exists() {
            assert_eq!(file_mode(&path), 0o600, "{journal}");
        }
    }
    let mode: Vec<u8> = Raw::Sqlite(db.clone())
        .bytes(
            "SELECT journal_mode FROM pragma_journal_mode WHERE $1 = $1",
            "",
        )
        .await
        .remove(0);
    assert_eq!(mode, b"wal");
    store.close().await;
    assert!(!dir.path().join("infra.db.new").exists());

    // A looser mode is tightened at the next start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let again = Store::open(&config).await.expect("second start");
    assert!(!again.created());
    assert_eq!(file_mode(&db), 0o600);
    again.close().await;
}

#[tokio::test]
async fn sqlite_missing_database_with_a_root_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sqlite_config(dir.path());
    Store::open(&config)
        .await
        .expect("first start")
        .close()
        .await;
    std::fs::remove_file(dir.path().join("infra.db")).expect("lose the database");
    let err = Store::open(&config).await.expect_err("data lost");
    assert!(matches!(err, OpenError::DatabaseMissing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("infra.db") && text.contains("root key"),
        "{text}"
    );
    eprintln!("refusal: {text}");
    assert!(
        !dir.path().join("infra.db").exists(),
        "no empty store was made"
    );

    // Unless a first start is asked for explicitly.
    let init = StoreConfig {
        initialize: true,
        ..config.clone()
    };
    let store = Store::open(&init).await.expect("initialize");
    assert!(store.created());
    store.close().await;
}

#[tokio::test]
async fn sqlite_corrupt_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sqlite_config(dir.path());
    let db = dir.path().join("infra.db");
    let store = Store::open(&config).await.expect("first start");
    for i in 0..200 {
        store
            .create_user("admin", &format!("user{i}@example.com"), SystemTime::now())
            .await
            .expect("fill");
    }
    store.close().await;
    let good = std::fs::read(&db).expect("read");

    // Garbage over the whole file.
    std::fs::write(&db, b"this is not a database, just garbage ".repeat(200)).expect("garbage");
    let err = Store::open(&config).await.expect_err("garbage");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("infra.db"), "{err}");
    eprintln!("refusal: {err}");

    // An empty file.
    std::fs::write(&db, b"").expect("truncate");
    let err = Store::open(&config).await.expect_err("empty");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        std::fs::metadata(&db).expect("stat").len(),
        0,
        "left as it was"
    );

    // A valid header with damaged pages behind it.
    let mut damaged = good.clone();
    for b in damaged.iter_mut().skip(100) {
        *b = 0x5a;
    }
    std::fs::write(&db, &damaged).expect("damage");
    let err = Store::open(&config).await.expect_err("damaged pages");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    eprintln!("refusal: {err}");

    // Restored, it opens with its data.
    std::fs::write(&db, &good).expect("restore");
    let store = Store::open(&config).await.expect("restored");
    assert_eq!(store.list_users().await.expect("users").len(), 200);
    store.close().await;
}

#[tokio::test]
async fn sqlite_missing_or_wrong_root_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = sqlite_config(dir.path());
    Store::open(&config)
        .await
        .expect("first start")
        .close()
        .await;
    let key = dir.path().join("root.key");
    let saved = std::fs::read(&key).expect("read key");

    std::fs::remove_file(&key).expect("lose the key");
    let err = Store::open(&config).await.expect_err("no key");
    assert!(matches!(err, OpenError::RootKeyMissing { .. }), "{err:?}");
    assert!(!key.exists(), "no new key was made for an existing store");

    let other = tempfile::tempdir().expect("temp dir");
    Store::open(&sqlite_config(other.path()))
        .await
        .expect("another store")
        .close()
        .await;
    std::fs::copy(other.path().join("root.key"), &key).expect("wrong key");
    let err = Store::open(&config).await.expect_err("wrong key");
    assert!(matches!(err, OpenError::WrongRootKey { .. }), "{err:?}");
    eprintln!("refusal: {err}");

    std::fs::write(&key, saved).expect("restore key");
    Store::open(&config).await.expect("right key").close().await;
}

#[tokio::test]
async fn sqlite_foreign_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("infra.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("make a database");
    sqlx::query("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .expect("table");
    conn.close().await.expect("close");
    let err = Store::open(&sqlite_config(dir.path()))
        .await
        .expect_err("foreign");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
}

/// PostgreSQL: a first start, a restart, an empty database, replicas starting together, and the
/// refusals (missing or wrong root key, foreign database, no database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_first_start_replicas_and_refusals() {
    let server = pg::Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = RootKeySource::File(dir.path().join("root.key"));
    let config = |db: &str, key: RootKeySource| StoreConfig {
        passwords: fast_passwords(),
        ..StoreConfig::postgres(Secret::new(server.url(db)), key)
    };

    server.create_database("store").await;
    let store_config = config("store", key.clone());
    let first = Store::open(&store_config).await.expect("first start");
    assert!(first.created(), "a first start creates the store");
    first.close().await;
    let store = Store::open(&store_config).await.expect("reopen");
    assert_eq!(store.database_kind(), "postgres");
    assert!(!store.created());
    store.close().await;
    assert_eq!(file_mode(&dir.path().join("root.key")), 0o600);

    // An empty database while the root key exists: refused, unless initialization is asked.
    server.create_database("empty").await;
    let err = Store::open(&config("empty", key.clone()))
        .await
        .expect_err("empty");
    assert!(matches!(err, OpenError::DatabaseMissing { .. }), "{err:?}");
    eprintln!("refusal: {err}");
    let init = StoreConfig {
        initialize: true,
        ..config("empty", key.clone())
    };
    let store = Store::open(&init).await.expect("initialize");
    assert!(store.created());
    store.close().await;

    // Replicas starting together on a new database agree on one store.
    server.create_database("replicas").await;
    let replica = StoreConfig {
        initialize: true,
        ..config("replicas", key.clone())
    };
    let (a, b) = tokio::join!(Store::open(&replica), Store::open(&replica));
    let (a, b) = (a.expect("replica a"), b.expect("replica b"));
    a.create_user("admin", "x@example.com", SystemTime::now())
        .await
        .expect("write on a");
    assert!(b.get_user("x@example.com").await.is_ok());
    a.close().await;
    b.close().await;

    // A missing root key, a wrong one, a foreign database, a database that does not exist.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let err = Store::open(&config(
        "store",
        RootKeySource::File(elsewhere.path().join("k")),
    ))
    .await
    .expect_err("no key");
    assert!(matches!(err, OpenError::RootKeyMissing { .. }), "{err:?}");
    assert!(!elsewhere.path().join("k").exists());
    server.create_database("other").await;
    let other_key = RootKeySource::File(elsewhere.path().join("other.key"));
    Store::open(&config("other", other_key.clone()))
        .await
        .expect("other store")
        .close()
        .await;
    let err = Store::open(&config("store", other_key))
        .await
        .expect_err("wrong key");
    assert!(matches!(err, OpenError::WrongRootKey { .. }), "{err:?}");
    server.create_database("alien").await;
    server
        .execute("alien", "CREATE TABLE customers (id BIGINT)")
        .await;
    let err = Store::open(&config("alien", key.clone()))
        .await
        .expect_err("foreign");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    let err = Store::open(&config("nonexistent", key.clone()))
        .await
        .expect_err("no database");
    assert!(matches!(err, OpenError::Connect { .. }), "{err:?}");
    assert!(!format!("{:?}", config("store", key).database).contains("postgres://"));
    assert!(matches!(
        Database::Postgres(Secret::new("x")),
        Database::Postgres(_)
    ));
}
