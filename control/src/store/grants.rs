//! Grants of roles on resources to users and groups, and the purge of what has expired.

use std::time::SystemTime;

use infra_authz::policy::{Grant, Resource, Subject, validate_role_name, validate_subject_name};

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// The store's id.
    pub id: i64,
    /// The grant.
    pub grant: Grant,
    /// When it was made.
    pub created_at: SystemTime,
    /// Who made it.
    pub created_by: String,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

/// How many expired things a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Purged {
    /// Grants.
    pub grants: u64,
    /// Access keys.
    pub access_keys: u64,
    /// The access keys removed, (id, user): their sessions have ended.
    pub ended: Vec<(String, String)>,
}

macro_rules! grant_columns {
    () => {
        "id, subject_kind, subject_name, role, destination, namespace, expires_at, created_at, \
         created_by, updated_at, revision"
    };
}

fn subject_parts(subject: &Subject) -> (&'static str, &str) {
    match subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    }
}

/// A grant as the audit trail shows it before and after a change: the control API's fields.
fn grant_object(stored: &StoredGrant) -> serde_json::Value {
    let grant = &stored.grant;
    let (kind, name) = subject_parts(&grant.subject);
    let mut object = serde_json::json!({
        "id": stored.id,
        kind: name,
        "role": grant.role,
        "resource": grant.resource.to_string(),
        "revision": stored.revision,
    });
    if let Some(expires_at) = grant.expires_at {
        object["expires_at"] = super::rfc3339(expires_at).into();
    }
    object
}

fn grant_target(grant: &Grant) -> String {
    format!("{} {} {}", grant.subject, grant.role, grant.resource)
}

fn validate_grant(grant: &Grant) -> Result<(), StoreError> {
    let (_, name) = subject_parts(&grant.subject);
    validate_subject_name(name)?;
    validate_role_name(&grant.role)?;
    // Parsing the displayed form checks both labels the way the policy file does.
    grant.resource.to_string().parse::<Resource>()?;
    Ok(())
}

fn grant_from(row: &dyn Columns) -> Result<StoredGrant, StoreError> {
    let name = row.text("subject_name")?;
    let subject = match row.text("subject_kind")?.as_str() {
        "user" => Subject::User(name),
        "group" => Subject::Group(name),
        other => {
            return Err(StoreError::InvalidRow {
                what: format!("grant subject kind {other:?}"),
            });
        }
    };
    let namespace = row.text("namespace")?;
    Ok(StoredGrant {
        id: row.int("id")?,
        grant: Grant {
            subject,
            role: row.text("role")?,
            resource: Resource {
                destination: row.text("destination")?,
                namespace: (!namespace.is_empty()).then_some(namespace),
            },
            expires_at: row.opt_int("expires_at")?.map(time),
        },
        created_at: time(row.int("created_at")?),
        created_by: row.text("created_by")?,
        updated_at: time(row.int("updated_at")?),
        revision: row.int("revision")?,
    })
}

impl Store {
    /// Deletes a user or a group, and the grants to it.
    pub(super) async fn delete_subject(
        &self,
        actor: &str,
        subject: &Subject,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (kind, name) = subject_parts(subject);
        let (sql, op, grants_sql, grants_op, action) = match subject {
            Subject::User(_) => (
                "DELETE FROM users WHERE name = $1",
                "delete a user",
                concat!(
                    "DELETE FROM grants WHERE subject_kind = 'user' AND subject_name = $1 RETURNING ",
                    grant_columns!()
                ),
                "delete a user's grants",
                "user.delete",
            ),
            Subject::Group(_) => (
                "DELETE FROM user_groups WHERE name = $1",
                "delete a group",
                concat!(
                    "DELETE FROM grants WHERE subject_kind = 'group' AND subject_name = $1 RETURNING ",
                    grant_columns!()
                ),
                "delete a group's grants",
                "group.delete",
            ),
        };
        let target = format!("{kind} {name:?}");
        write_tx!(self, secs(now), actor, |tx| {
            let deleted = sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .op(op)?
                .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            let rows = sqlx::query(grants_sql)
                .bind(name)
                .fetch_all(&mut *tx)
                .await
                .op(grants_op)?;
            let grants = rows
                .iter()
                .map(|row| grant_from(row).map(|g| grant_object(&g)))
                .collect::<Result<Vec<_>, _>>()?;
            let entry = Entry::new(action, target)
                .detail(format!("grants removed: {}", grants.len()))
                .before(&serde_json::json!({ kind: name, "grants": grants }));
            ((), entry)
        })
    }

    /// Creates a grant. [`StoreError::AlreadyExists`] when the same subject already has the
    /// same role on the same resource (whatever its expiry).
    pub async fn create_grant(
        &self,
        actor: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<StoredGrant, StoreError> {
        validate_grant(grant)?;
        let at = secs(now);
        let (kind, name) = subject_parts(&grant.subject);
        let target = grant_target(grant);
        write_tx!(self, at, actor, |tx| {
            let row = sqlx::query(concat!(
                "INSERT INTO grants (subject_kind, subject_name, role, destination, namespace, ",
                "expires_at, created_at, created_by, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) ",
                "ON CONFLICT (subject_kind, subject_name, role, destination, namespace) ",
                "DO NOTHING RETURNING ",
                grant_columns!()
            ))
            .bind(kind)
            .bind(name)
            .bind(grant.role.as_str())
            .bind(grant.resource.destination.as_str())
            .bind(grant.resource.namespace.as_deref().unwrap_or(""))
            .bind(grant.expires_at.map(secs))
            .bind(at)
            .bind(actor.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .op("create a grant")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists {
                    what: format!("grant of {target}"),
                });
            };
            let detail = grant
                .expires_at
                .map_or_else(String::new, |e| format!("expires {}", secs(e)));
            let stored = grant_from(&row)?;
            let entry = Entry::new("grant.create", target)
                .detail(detail)
                .after(&grant_object(&stored));
            (stored, entry)
        })
    }

    /// The grant with id `id` (expired or not).
    pub async fn get_grant(&self, id: i64) -> Result<StoredGrant, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .op("read a grant")?;
            row.map_or_else(|| Err(not_found(format!("grant {id}"))), |r| grant_from(&r))
        })
    }

    /// The grant of `role` on `resource` to `subject`, if there is one (expired or not).
    pub async fn find_grant(
        &self,
        subject: &Subject,
        role: &str,
        resource: &Resource,
    ) -> Result<Option<StoredGrant>, StoreError> {
        let (kind, name) = subject_parts(subject);
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE subject_kind = $1 AND subject_name = $2 AND role = $3 ",
                "AND destination = $4 AND namespace = $5"
            ))
            .bind(kind)
            .bind(name)
            .bind(role)
            .bind(resource.destination.as_str())
            .bind(resource.namespace.as_deref().unwrap_or(""))
            .fetch_optional(pool)
            .await
            .op("find a grant")?;
            row.map(|r| grant_from(&r)).transpose()
        })
    }

    /// The grants in force at `now`, oldest first.
    pub async fn list_grants(&self, now: SystemTime) -> Result<Vec<StoredGrant>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id"
            ))
            .bind(secs(now))
            .fetch_all(pool)
            .await
            .op("list grants")?
            .iter()
            .map(|r| grant_from(r))
            .collect()
        })
    }

    /// The grants in force at `now` on `destination` (all its namespaces), by id.
    pub async fn list_grants_on(
        &self,
        destination: &str,
        now: SystemTime,
    ) -> Result<Vec<StoredGrant>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE destination = $1 AND (expires_at IS NULL OR expires_at > $2) \
                 ORDER BY id"
            ))
            .bind(destination)
            .bind(secs(now))
            .fetch_all(pool)
            .await
            .op("list grants of a destination")?
            .iter()
            .map(|r| grant_from(r))
            .collect()
        })
    }

    /// Changes a grant's expiry, if the grant is still at `expected_revision`.
    pub async fn update_grant_expiry(
        &self,
        actor: &str,
        id: i64,
        expected_revision: i64,
        expires_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<StoredGrant, StoreError> {
        let at = secs(now);
        write_tx!(self, at, actor, |tx| {
            let before = sqlx::query(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .op("read a grant")?;
            let row = sqlx::query(concat!(
                "UPDATE grants SET expires_at = $1, updated_at = $2, revision = revision + 1 ",
                "WHERE id = $3 AND revision = $4 RETURNING ",
                grant_columns!()
            ))
            .bind(expires_at.map(secs))
            .bind(at)
            .bind(id)
            .bind(expected_revision)
            .fetch_optional(&mut *tx)
            .await
            .op("update a grant")?;
            let Some(row) = row else {
                return Err(revision_conflict!(
                    tx,
                    "SELECT revision FROM grants WHERE id = $1",
                    id,
                    "read a grant's revision",
                    format!("grant {id}"),
                    Some(expected_revision)
                ));
            };
            let stored = grant_from(&row)?;
            let detail = expires_at.map_or_else(
                || "expires never".to_owned(),
                |e| format!("expires {}", secs(e)),
            );
            let mut entry = Entry::new("grant.update", grant_target(&stored.grant))
                .detail(detail)
                .after(&grant_object(&stored));
            if let Some(before) = before {
                entry = entry.before(&grant_object(&grant_from(&before)?));
            }
            (stored, entry)
        })
    }

    /// Deletes the grant `id`; with `expected_revision`, only if it is still at that revision.
    pub async fn delete_grant(
        &self,
        actor: &str,
        id: i64,
        expected_revision: Option<i64>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        write_tx!(self, secs(now), actor, |tx| {
            let row = sqlx::query(concat!(
                "DELETE FROM grants WHERE id = $1 AND ($2 IS NULL OR revision = $2) RETURNING ",
                grant_columns!()
            ))
            .bind(id)
            .bind(expected_revision)
            .fetch_optional(&mut *tx)
            .await
            .op("delete a grant")?;
            let Some(row) = row else {
                return Err(revision_conflict!(
                    tx,
                    "SELECT revision FROM grants WHERE id = $1",
                    id,
                    "read a grant's revision",
                    format!("grant {id}"),
                    expected_revision
                ));
            };
            let stored = grant_from(&row)?;
            let entry = Entry::new("grant.delete", grant_target(&stored.grant))
                .before(&grant_object(&stored));
            ((), entry)
        })
    }

    /// Deletes the grant of `grant.role` on `grant.resource` to `grant.subject` (its expiry is
    /// not compared). [`StoreError::NotFound`] when there is none.
    pub async fn revoke_grant(
        &self,
        actor: &str,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (kind, name) = subject_parts(&grant.subject);
        let target = grant_target(grant);
        write_tx!(self, secs(now), actor, |tx| {
            let deleted = sqlx::query(concat!(
                "DELETE FROM grants WHERE subject_kind = $1 AND subject_name = $2 AND role = $3 ",
                "AND destination = $4 AND namespace = $5 RETURNING ",
                grant_columns!()
            ))
            .bind(kind)
            .bind(name)
            .bind(grant.role.as_str())
            .bind(grant.resource.destination.as_str())
            .bind(grant.resource.namespace.as_deref().unwrap_or(""))
            .fetch_optional(&mut *tx)
            .await
            .op("revoke a grant")?;
            let Some(deleted) = deleted else {
                return Err(not_found(format!("grant of {target}")));
            };
            let entry =
                Entry::new("grant.delete", target).before(&grant_object(&grant_from(&deleted)?));
            ((), entry)
        })
    }

    /// Deletes the grants and access keys that have expired by `now`.
    pub async fn purge_expired(&self, now: SystemTime) -> Result<Purged, StoreError> {
        let at = secs(now);
        write_tx!(self, at, "system", |tx| {
            let grants = sqlx::query("DELETE FROM grants WHERE expires_at <= $1")
                .bind(at)
                .execute(&mut *tx)
                .await
                .op("purge expired grants")?
                .rows_affected();
            let rows = sqlx::query(
                "SELECT k.id AS id, u.name AS user_name FROM access_keys k \
                 JOIN users u ON u.id = k.user_id \
                 WHERE k.expires_at <= $1 OR k.last_used_at + k.inactivity_timeout <= $1",
            )
            .bind(at)
            .fetch_all(&mut *tx)
            .await
            .op("list expired access keys")?;
            let mut ended = Vec::with_capacity(rows.len());
            for row in &rows {
                ended.push((row.text("id")?, row.text("user_name")?));
            }
            let access_keys = sqlx::query(
                "DELETE FROM access_keys WHERE expires_at <= $1 \
                 OR last_used_at + inactivity_timeout <= $1",
            )
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("purge expired access keys")?
            .rows_affected();
            let entry = (grants + access_keys > 0).then(|| {
                Entry::new("purge.expired", String::new())
                    .detail(format!("grants: {grants}, access keys: {access_keys}"))
            });
            (
                Purged {
                    grants,
                    access_keys,
                    ended,
                },
                entry,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use infra_authz::policy::{Grant, Resource, Subject};

    use super::validate_grant;

    #[test]
    fn grants_are_validated_like_the_policy_file() {
        let grant = |subject: Subject, role: &str, resource: Resource| Grant {
            subject,
            role: role.into(),
            resource,
            expires_at: None,
        };
        assert!(
            validate_grant(&grant(
                Subject::User("a@example.com".into()),
                "view",
                Resource::namespace("prod", "web")
            ))
            .is_ok()
        );
        assert!(
            validate_grant(&grant(
                Subject::Group("system:masters".into()),
                "view",
                Resource::destination("prod")
            ))
            .is_err()
        );
        assert!(
            validate_grant(&grant(
                Subject::User("a".into()),
                "a/b",
                Resource::destination("prod")
            ))
            .is_err()
        );
        assert!(
            validate_grant(&grant(
                Subject::User("a".into()),
                "view",
                Resource::destination("Prod")
            ))
            .is_err()
        );
    }
}
