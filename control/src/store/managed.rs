//! Who manages what beyond the API (the policy file, an identity provider's group
//! memberships): the names each owner declared.

use std::collections::BTreeSet;

use super::{Columns as _, Op as _, Store, StoreError};

impl Store {
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
        write_tx!(self, |tx| {
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
        })
    }

    /// Records that `owner` manages `name` too (no-op when it already does).
    pub async fn add_managed(&self, owner: &str, name: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "INSERT INTO managed (owner, name) VALUES ($1, $2) \
                 ON CONFLICT (owner, name) DO NOTHING",
            )
            .bind(owner)
            .bind(name)
            .execute(pool)
            .await
            .op("record what is managed")?;
            Ok(())
        })
    }
}
