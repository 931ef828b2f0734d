//! Destinations: the clusters with their proxies, as the proxies report them.

use std::time::SystemTime;

use infra_authz::policy::validate_dns_label;

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};

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

macro_rules! destination_columns {
    () => {
        "id, name, url, ca_pem, version, last_seen_at, created_at, updated_at, revision"
    };
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

/// A destination as the audit trail shows it before and after a change (its CA by its
/// SHA-256, not the whole PEM).
fn destination_object(d: &Destination) -> serde_json::Value {
    use sha2::Digest as _;
    serde_json::json!({
        "name": d.name,
        "url": d.url,
        "version": d.version,
        "ca_sha256": hex::encode(sha2::Sha256::digest(d.ca_pem.as_bytes())),
        "revision": d.revision,
    })
}

impl Store {
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
        write_tx!(self, at, actor, |tx| {
            let before = sqlx::query(concat!(
                "SELECT ",
                destination_columns!(),
                " FROM destinations WHERE name = $1"
            ))
            .bind(destination.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .op("read a destination")?;
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
            let detail = format!("url {}, version {}", destination.url, destination.version);
            let stored = destination_from(&row)?;
            let mut entry = Entry::new("destination.put", target)
                .detail(detail)
                .after(&destination_object(&stored));
            if let Some(before) = before {
                entry = entry.before(&destination_object(&destination_from(&before)?));
            }
            (stored, entry)
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
}
