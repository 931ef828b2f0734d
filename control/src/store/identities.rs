//! Provider identities: (provider, subject) bound to one user for good, so a provider login is
//! the same user next time whatever its email says, and never takes over a user of another
//! origin without an admin's link.

use std::time::SystemTime;

use super::{Entry, Op as _, Store, StoreError, User, not_found, secs};

/// What binding a provider identity to a user found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The identity is bound to this user (now, or from before).
    Bound(User),
    /// The user the identity's email names is of another origin (has a password, or is bound
    /// to another identity): an admin must link them.
    Refused {
        /// The user's name.
        user: String,
        /// Why.
        why: String,
    },
}

impl Store {
    /// The user `provider`'s `subject` is bound to, if any.
    pub async fn user_of_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let name: Option<String> = with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "SELECT u.name AS name FROM user_identities i JOIN users u ON u.id = i.user_id \
                 WHERE i.provider = $1 AND i.subject = $2",
            )
            .bind(provider)
            .bind(subject)
            .fetch_optional(pool)
            .await
            .op("look up a provider identity")?;
            row.map(|r| super::Columns::text(&r, "name")).transpose()
        })?;
        match name {
            Some(name) => Ok(Some(self.get_user(&name).await?)),
            None => Ok(None),
        }
    }

    /// The identities bound to `user`, (provider, subject).
    pub async fn identities_of(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        with_db!(self, |pool, _begin| {
            let rows = sqlx::query(
                "SELECT i.provider AS provider, i.subject AS subject FROM user_identities i \
                 JOIN users u ON u.id = i.user_id WHERE u.name = $1 \
                 ORDER BY i.provider, i.subject",
            )
            .bind(user)
            .fetch_all(pool)
            .await
            .op("list a user's identities")?;
            rows.iter()
                .map(|r| {
                    Ok((
                        super::Columns::text(r, "provider")?,
                        super::Columns::text(r, "subject")?,
                    ))
                })
                .collect()
        })
    }

    /// Binds `provider`'s `subject` at its first login to the user named `name`: made if there
    /// is none; taken if it has no password and no identity; refused otherwise. One
    /// transaction, so two first logins cannot both take a user.
    pub async fn bind_identity(
        &self,
        provider: &str,
        subject: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<Binding, StoreError> {
        let actor = format!("provider:{provider}");
        let at = secs(now);
        let bound: Result<(), StoreError> = write_tx!(self, at, actor.as_str(), |tx| {
            let existing = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .op("read the user an identity names")?;
            let (id, entry) = if let Some(row) = existing {
                let id = super::Columns::int(&row, "id")?;
                // Takes the row's lock (PostgreSQL) before counting its identities, so two
                // first logins cannot both take the user.
                sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .op("lock the user an identity names")?;
                let bound =
                    sqlx::query("SELECT COUNT(*) AS n FROM user_identities WHERE user_id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await
                        .op("count a user's identities")?;
                let has_password = super::Columns::opt_text(&row, "password_hash")?.is_some();
                if has_password || super::Columns::int(&bound, "n")? > 0 {
                    let why = if has_password {
                        "has a local password"
                    } else {
                        "is bound to another provider identity"
                    };
                    return Ok(Binding::Refused {
                        user: name.to_owned(),
                        why: why.to_owned(),
                    });
                }
                (
                    id,
                    Entry::new("user.identity.bind", format!("user {name:?}"))
                        .detail(format!("{provider} {subject:?}")),
                )
            } else {
                infra_authz::policy::validate_subject_name(name)?;
                let row = sqlx::query(
                    "INSERT INTO users (name, created_at, updated_at) VALUES ($1, $2, $2) \
                         RETURNING id",
                )
                .bind(name)
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .op("make a user")?;
                (
                    super::Columns::int(&row, "id")?,
                    Entry::new("user.create", format!("user {name:?}"))
                        .detail(format!("{provider} {subject:?}")),
                )
            };
            sqlx::query(
                "INSERT INTO user_identities (provider, subject, user_id, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(provider)
            .bind(subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("bind a provider identity")?;
            ((), entry)
        });
        bound?;
        Ok(Binding::Bound(self.get_user(name).await?))
    }

    /// Links `provider`'s `subject` to the user `name` (an admin's decision), replacing what it
    /// was bound to.
    pub async fn link_identity(
        &self,
        actor: &str,
        name: &str,
        provider: &str,
        subject: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        write_tx!(self, at, actor, |tx| {
            let row = sqlx::query("SELECT id FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .op("read a user")?;
            let Some(row) = row else {
                return Err(not_found(format!("user {name:?}")));
            };
            let id = super::Columns::int(&row, "id")?;
            sqlx::query("DELETE FROM user_identities WHERE provider = $1 AND subject = $2")
                .bind(provider)
                .bind(subject)
                .execute(&mut *tx)
                .await
                .op("unbind a provider identity")?;
            sqlx::query(
                "INSERT INTO user_identities (provider, subject, user_id, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(provider)
            .bind(subject)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("link a provider identity")?;
            (
                (),
                Entry::new("user.identity.link", format!("user {name:?}"))
                    .detail(format!("{provider} {subject:?}")),
            )
        })
    }
}
