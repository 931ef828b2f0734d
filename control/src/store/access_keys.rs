//! Access keys: made, imported, checked when presented, listed and deleted.

use std::time::{Duration, SystemTime};

use infra_authz::policy::Secret;

use super::{
    Columns, Entry, Op as _, Store, StoreError, User, duration_secs, not_found, secs, time,
};
use crate::keys::{self, Presented};

/// What an access key is for: the wire type, stored by its name ([`KeyKind::as_str`]).
pub use infra_api::KeyKind;

/// Why an access key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Malformed, unknown, or the secret is wrong.
    #[error("the access key is not valid")]
    Invalid,
    /// The key's lifetime is over.
    #[error("the access key has expired")]
    Expired,
    /// The key was unused for longer than its inactivity timeout.
    #[error("the access key has expired from inactivity")]
    Inactive,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new access key should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessKey {
    /// A name for people to tell keys apart.
    pub name: String,
    /// What it is for.
    pub kind: KeyKind,
    /// When it lapses, if ever.
    pub expires_at: Option<SystemTime>,
    /// It lapses when unused for this long, if set.
    pub inactivity_timeout: Option<Duration>,
}

impl NewAccessKey {
    /// A login session's key: 30 days, or 3 days unused.
    pub fn session(now: SystemTime) -> Self {
        Self {
            name: "session".to_owned(),
            kind: KeyKind::Session,
            expires_at: Some(now + keys::SESSION_EXPIRY),
            inactivity_timeout: Some(keys::SESSION_INACTIVITY),
        }
    }
}

/// An access key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The public id, the part before the `.`.
    pub id: String,
    /// Whose key it is.
    pub user: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub kind: KeyKind,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it lapses, if ever.
    pub expires_at: Option<SystemTime>,
    /// It lapses when unused for this long, if set.
    pub inactivity_timeout: Option<Duration>,
    /// When it was last used (or made).
    pub last_used_at: SystemTime,
}

impl AccessKey {
    /// Why the key is not usable at `now`, if it is not.
    pub fn lapsed(&self, now: SystemTime) -> Option<KeyError> {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Some(KeyError::Expired);
        }
        if self
            .inactivity_timeout
            .is_some_and(|t| now >= self.last_used_at + t)
        {
            return Some(KeyError::Inactive);
        }
        None
    }
}

macro_rules! key_columns {
    () => {
        "k.id, u.name AS user_name, k.name, k.kind, k.created_at, k.expires_at, \
         k.inactivity_timeout, k.last_used_at"
    };
}

/// A stored kind; one this version does not know is an invalid row.
fn kind_from(s: &str) -> Result<KeyKind, StoreError> {
    s.parse().map_err(|what| StoreError::InvalidRow { what })
}

fn key_from(row: &dyn Columns) -> Result<AccessKey, StoreError> {
    Ok(AccessKey {
        id: row.text("id")?,
        user: row.text("user_name")?,
        name: row.text("name")?,
        kind: kind_from(&row.text("kind")?)?,
        created_at: time(row.int("created_at")?),
        expires_at: row.opt_int("expires_at")?.map(time),
        inactivity_timeout: row
            .opt_int("inactivity_timeout")?
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        last_used_at: time(row.int("last_used_at")?),
    })
}

impl Store {
    /// Makes an access key for `user`. The returned secret (`<id>.<secret>`) is shown once; the
    /// store keeps only the SHA-256 of its secret part.
    pub async fn create_access_key(
        &self,
        actor: &str,
        user: &str,
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<(AccessKey, Secret), StoreError> {
        let key = keys::generate(&self.rng)?;
        let stored = self
            .insert_access_key(actor, user, &key.id, &key.hash, new, now)
            .await?;
        Ok((stored, key.key))
    }

    /// Stores an access key made elsewhere (the policy file's `accessKey`), as its hash.
    pub async fn import_access_key(
        &self,
        actor: &str,
        user: &str,
        key: &Secret,
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<AccessKey, StoreError> {
        let presented = Presented::parse(key.expose()).ok_or_else(|| StoreError::InvalidRow {
            what: "access key (it is not `<id>.<secret>`)".to_owned(),
        })?;
        self.insert_access_key(actor, user, presented.id, &presented.hash(), new, now)
            .await
    }

    async fn insert_access_key(
        &self,
        actor: &str,
        user: &str,
        id: &str,
        hash: &[u8],
        new: &NewAccessKey,
        now: SystemTime,
    ) -> Result<AccessKey, StoreError> {
        let at = secs(now);
        let target = format!("access key {id:?} of user {user:?}");
        write_tx!(self, at, actor, |tx| {
            let user_id = sqlx::query("SELECT id FROM users WHERE name = $1")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await
                .op("find a user")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?
                .int("id")?;
            let inserted = sqlx::query(
                "INSERT INTO access_keys (id, user_id, name, kind, secret_hash, created_at, \
                 expires_at, inactivity_timeout, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(user_id)
            .bind(new.name.as_str())
            .bind(new.kind.as_str())
            .bind(hash.to_vec())
            .bind(at)
            .bind(new.expires_at.map(secs))
            .bind(new.inactivity_timeout.map(duration_secs))
            .execute(&mut *tx)
            .await
            .op("create an access key")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("access key {id:?}"),
                });
            }
            let detail = format!(
                "kind {}, expires {}",
                new.kind.as_str(),
                new.expires_at
                    .map_or_else(|| "never".to_owned(), |e| secs(e).to_string())
            );
            let key = AccessKey {
                id: id.to_owned(),
                user: user.to_owned(),
                name: new.name.clone(),
                kind: new.kind,
                created_at: time(at),
                expires_at: new.expires_at.map(|e| time(secs(e))),
                inactivity_timeout: new
                    .inactivity_timeout
                    .map(|d| Duration::from_secs(d.as_secs())),
                last_used_at: time(at),
            };
            let mut after = serde_json::json!({
                "id": key.id,
                "user": key.user,
                "name": key.name,
                "kind": key.kind.as_str(),
            });
            if let Some(expires_at) = key.expires_at {
                after["expires_at"] = super::rfc3339(expires_at).into();
            }
            if let Some(idle) = key.inactivity_timeout {
                after["inactivity_timeout_seconds"] = idle.as_secs().into();
            }
            let entry = Entry::new("access_key.create", target)
                .detail(detail)
                .after(&after);
            (key, entry)
        })
    }

    /// Checks a presented key at `now` and marks it used. Returns the key and its user.
    pub async fn authenticate_access_key(
        &self,
        key: &Secret,
        now: SystemTime,
    ) -> Result<(AccessKey, User), KeyError> {
        let Some(presented) = Presented::parse(key.expose()) else {
            return Err(KeyError::Invalid);
        };
        let at = secs(now);
        let found = with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                key_columns!(),
                ", k.secret_hash, u.id AS u_id, u.name AS u_name, u.password_hash AS u_password_hash, ",
                "u.created_at AS u_created_at, u.updated_at AS u_updated_at, u.revision AS u_revision ",
                "FROM access_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1"
            ))
            .bind(presented.id)
            .fetch_optional(pool)
            .await
            .op("read an access key")?;
            row.map(|row| -> Result<_, StoreError> {
                let stored = key_from(&row)?;
                let hash = row.blob("secret_hash")?;
                let user = User {
                    id: row.int("u_id")?,
                    name: row.text("u_name")?,
                    has_password: row.opt_text("u_password_hash")?.is_some(),
                    created_at: time(row.int("u_created_at")?),
                    updated_at: time(row.int("u_updated_at")?),
                    revision: row.int("u_revision")?,
                };
                Ok((stored, hash, user))
            })
            .transpose()?
        });
        let Some((stored, hash, user)) = found else {
            // Same work as for a known id, though ids are not secret.
            let _ = presented.matches(&[0u8; keys::HASH_LEN]);
            return Err(KeyError::Invalid);
        };
        if !presented.matches(&hash) {
            return Err(KeyError::Invalid);
        }
        if let Some(lapsed) = stored.lapsed(now) {
            return Err(lapsed);
        }
        with_db!(self, |pool, _begin| {
            sqlx::query(
                "UPDATE access_keys SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1",
            )
            .bind(at)
            .bind(stored.id.as_str())
            .execute(pool)
            .await
            .op("mark an access key used")?;
        });
        let stored = AccessKey {
            last_used_at: time(at.max(secs(stored.last_used_at))),
            ..stored
        };
        Ok((stored, user))
    }

    /// The access keys of `user`, oldest first.
    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKey>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM access_keys k JOIN users u ON u.id = k.user_id WHERE u.name = $1 ",
                "ORDER BY k.created_at, k.id"
            ),
            Some(user),
            "list access keys",
            key_from,
        )
        .await
    }

    /// Every access key of every user.
    pub async fn all_access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        self.fetch_all(
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM access_keys k JOIN users u ON u.id = k.user_id ORDER BY k.id"
            ),
            None,
            "list access keys",
            key_from,
        )
        .await
    }

    /// Deletes the access key `id`.
    pub async fn delete_access_key(
        &self,
        actor: &str,
        id: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM access_keys WHERE id = $1",
            id,
            "delete an access key",
            "access_key.delete",
            format!("access key {id:?}"),
            now,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{AccessKey, KeyError, KeyKind};
    use crate::keys;

    #[test]
    fn keys_lapse_by_age_and_by_idleness() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let key = AccessKey {
            id: "id".into(),
            user: "u".into(),
            name: "session".into(),
            kind: KeyKind::Session,
            created_at: now,
            expires_at: Some(now + keys::SESSION_EXPIRY),
            inactivity_timeout: Some(keys::SESSION_INACTIVITY),
            last_used_at: now,
        };
        assert!(key.lapsed(now).is_none());
        let idle = now + keys::SESSION_INACTIVITY;
        assert!(matches!(key.lapsed(idle), Some(KeyError::Inactive)));
        let used = AccessKey {
            last_used_at: now + keys::SESSION_EXPIRY - Duration::from_secs(1),
            ..key
        };
        assert!(matches!(
            used.lapsed(now + keys::SESSION_EXPIRY),
            Some(KeyError::Expired)
        ));
    }
}
