//! Opening a PostgreSQL store, shared by the control replicas.

use std::str::FromStr as _;

use infra_authz::policy::Secret;
use ring::rand::SystemRandom;
use sqlx::Row as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    CHECK_CONTEXT, CHECK_KEY, CHECK_PLAINTEXT, Contents, OpenError, Opening, StoreConfig, migrator,
};
use crate::crypto::RootKey;
use crate::store::{Backend, Store};

fn postgres_migrator() -> Migrator {
    migrator([
        (
            "init",
            include_str!("../../../migrations/postgres/0001_init.sql"),
        ),
        (
            "managed",
            include_str!("../../../migrations/postgres/0002_managed.sql"),
        ),
        (
            "oidc logins",
            include_str!("../../../migrations/postgres/0003_oidc_logins.sql"),
        ),
        (
            "login guards",
            include_str!("../../../migrations/postgres/0004_login_guards.sql"),
        ),
        (
            "access requests",
            include_str!("../../../migrations/postgres/0005_requests.sql"),
        ),
        (
            "audit events",
            include_str!("../../../migrations/postgres/0006_audit_events.sql"),
        ),
        (
            "ended sessions",
            include_str!("../../../migrations/postgres/0007_ended_sessions.sql"),
        ),
        (
            "audit exports",
            include_str!("../../../migrations/postgres/0008_audit_exports.sql"),
        ),
    ])
}

pub(super) async fn open(config: &StoreConfig, url: &Secret) -> Result<Store, OpenError> {
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
