//! Identity providers, their client secrets sealed at rest.

use std::time::SystemTime;

use infra_authz::policy::{Provider, ProviderKind, validate_dns_label};

use super::{Columns, Entry, Op as _, Store, StoreError, secs, time};

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

macro_rules! provider_columns {
    () => {
        "id, name, kind, url, client_id, client_secret, scopes, created_at, updated_at, revision"
    };
}

/// A provider as the audit trail shows it before and after a change: everything but its
/// client secret.
fn provider_object(row: &dyn Columns) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::json!({
        "name": row.text("name")?,
        "kind": row.text("kind")?,
        "url": row.text("url")?,
        "client_id": row.text("client_id")?,
        "scopes": row.text("scopes")?.split_whitespace().collect::<Vec<_>>(),
        "revision": row.int("revision")?,
    }))
}

fn provider_context(name: &str) -> String {
    format!("provider:{name}:client_secret")
}

impl Store {
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
        write_tx!(self, at, actor, |tx| {
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
            let entry = Entry::new("provider.create", target)
                .detail(format!("url {}", provider.url))
                .after(&provider_object(&row)?);
            (self.provider_from(&row)?, entry)
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
        write_tx!(self, at, actor, |tx| {
            let before = sqlx::query(concat!(
                "SELECT ",
                provider_columns!(),
                " FROM providers WHERE name = $1"
            ))
            .bind(provider.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .op("read a provider")?;
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
            let mut entry = Entry::new("provider.update", target)
                .detail(format!("url {}", provider.url))
                .after(&provider_object(&row)?);
            if let Some(before) = before {
                entry = entry.before(&provider_object(&before)?);
            }
            (self.provider_from(&row)?, entry)
        })
    }

    /// Deletes the provider called `name`, with its users' sessions.
    pub async fn delete_provider(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let target = format!("provider {name:?}");
        write_tx!(self, secs(now), actor, |tx| {
            let deleted = sqlx::query(concat!(
                "DELETE FROM providers WHERE name = $1 RETURNING ",
                provider_columns!()
            ))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .op("delete a provider")?;
            let Some(deleted) = deleted else {
                return Err(super::not_found(target));
            };
            let entry = Entry::new("provider.delete", target).before(&provider_object(&deleted)?);
            ((), entry)
        })
    }
}
