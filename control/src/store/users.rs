//! Users: who they are, and their local passwords.

use std::time::SystemTime;

use infra_authz::policy::{Secret, Subject, validate_subject_name};

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};
use crate::passwords;

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The store's id.
    pub id: i64,
    /// The name (usually an email address).
    pub name: String,
    /// Whether the user has a local password.
    pub has_password: bool,
    /// When the user was made.
    pub created_at: SystemTime,
    /// When the user was last changed.
    pub updated_at: SystemTime,
    /// The revision, for optimistic concurrency.
    pub revision: i64,
}

macro_rules! user_columns {
    () => {
        "id, name, password_hash, created_at, updated_at, revision"
    };
}

fn user_from(row: &dyn Columns) -> Result<User, StoreError> {
    Ok(User {
        id: row.int("id")?,
        name: row.text("name")?,
        has_password: row.opt_text("password_hash")?.is_some(),
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
        revision: row.int("revision")?,
    })
}

impl Store {
    /// Creates a user without a password.
    pub async fn create_user(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<User, StoreError> {
        validate_subject_name(name)?;
        let at = secs(now);
        let target = format!("user {name:?}");
        write_tx!(self, at, actor, |tx| {
            let row = sqlx::query(concat!(
                "INSERT INTO users (name, created_at, updated_at) VALUES ($1, $2, $2) ",
                "ON CONFLICT (name) DO NOTHING RETURNING ",
                user_columns!()
            ))
            .bind(name)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("create a user")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists { what: target });
            };
            let entry =
                Entry::new("user.create", target).after(&serde_json::json!({ "name": name }));
            (user_from(&row)?, entry)
        })
    }

    /// The user called `name`.
    pub async fn get_user(&self, name: &str) -> Result<User, StoreError> {
        self.fetch_one(
            concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"),
            name,
            "read a user",
            "user",
            user_from,
        )
        .await
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.fetch_all(
            concat!("SELECT ", user_columns!(), " FROM users ORDER BY name"),
            None,
            "list users",
            user_from,
        )
        .await
    }

    /// Deletes a user with their memberships, access keys, provider sessions and grants.
    pub async fn delete_user(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_subject(actor, &Subject::User(name.to_owned()), now)
            .await
    }

    /// Sets a user's password, after checking it against the policy. Clears the user's failed
    /// logins.
    pub async fn set_password(
        &self,
        actor: &str,
        name: &str,
        password: &Secret,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        passwords::check_policy(password.expose(), name)?;
        let hash = self.passwords.hash(password).await?;
        let at = secs(now);
        let target = format!("user {name:?}");
        write_tx!(self, at, actor, |tx| {
            let updated = sqlx::query(
                "UPDATE users SET password_hash = $1, updated_at = $2, revision = revision + 1 \
                 WHERE name = $3",
            )
            .bind(hash)
            .bind(at)
            .bind(name)
            .execute(&mut *tx)
            .await
            .op("set a password")?
            .rows_affected();
            if updated == 0 {
                return Err(not_found(target));
            }
            sqlx::query("DELETE FROM login_failures WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .op("clear failed logins")?;
            ((), Entry::new("user.password.set", target))
        })
    }
}
