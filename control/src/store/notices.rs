//! Changes announced to the other control replicas sharing a PostgreSQL database.

use std::time::Duration;

use super::{Backend, Op as _, Store, StoreError};

/// The PostgreSQL notification channel control replicas announce changes on.
const CHANGES_CHANNEL: &str = "infra_changes";

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
}
