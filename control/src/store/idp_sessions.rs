//! Users' sessions with identity providers: refresh tokens, sealed at rest, and when the
//! provider last confirmed the user.

use std::time::SystemTime;

use infra_authz::policy::Secret;

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};

/// A user's session with an identity provider: the refresh token that lets the control plane
/// check, at a bounded interval, that the provider still knows the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpSession {
    /// The store's id.
    pub id: i64,
    /// The user.
    pub user: String,
    /// The provider.
    pub provider: String,
    /// The refresh token (opened).
    pub refresh_token: Secret,
    /// When the session was made.
    pub created_at: SystemTime,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// When the provider last confirmed the user.
    pub last_checked_at: SystemTime,
}

macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.provider_id, u.name AS user_name, p.name AS provider_name, \
         s.refresh_token, s.created_at, s.updated_at, s.last_checked_at"
    };
}

fn session_context(user_id: i64, provider_id: i64) -> String {
    format!("idp_session:{user_id}:{provider_id}:refresh_token")
}

impl Store {
    fn session_from(&self, row: &dyn Columns) -> Result<IdpSession, StoreError> {
        let context = session_context(row.int("user_id")?, row.int("provider_id")?);
        Ok(IdpSession {
            id: row.int("id")?,
            user: row.text("user_name")?,
            provider: row.text("provider_name")?,
            refresh_token: self.unseal_text(&row.blob("refresh_token")?, &context)?,
            created_at: time(row.int("created_at")?),
            updated_at: time(row.int("updated_at")?),
            last_checked_at: time(row.int("last_checked_at")?),
        })
    }

    /// Records (or replaces) `user`'s session with `provider` after a login there; the refresh
    /// token is sealed at rest. The session counts as checked at `now`.
    pub async fn put_idp_session(
        &self,
        actor: &str,
        user: &str,
        provider: &str,
        refresh_token: &Secret,
        now: SystemTime,
    ) -> Result<IdpSession, StoreError> {
        let at = secs(now);
        let target = format!("session of user {user:?} with provider {provider:?}");
        write_tx!(self, at, actor, |tx| {
            let ids = sqlx::query(
                "SELECT (SELECT id FROM users WHERE name = $1) AS user_id, \
                        (SELECT id FROM providers WHERE name = $2) AS provider_id",
            )
            .bind(user)
            .bind(provider)
            .fetch_one(&mut *tx)
            .await
            .op("find a user and a provider")?;
            let user_id = ids
                .opt_int("user_id")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?;
            let provider_id = ids
                .opt_int("provider_id")?
                .ok_or_else(|| not_found(format!("provider {provider:?}")))?;
            let sealed = self.seal(
                refresh_token.expose().as_bytes(),
                &session_context(user_id, provider_id),
            )?;
            let row = sqlx::query(
                "INSERT INTO idp_sessions (user_id, provider_id, refresh_token, created_at, \
                 updated_at, last_checked_at) VALUES ($1, $2, $3, $4, $4, $4) \
                 ON CONFLICT (user_id, provider_id) DO UPDATE SET \
                 refresh_token = excluded.refresh_token, updated_at = excluded.updated_at, \
                 last_checked_at = excluded.last_checked_at \
                 RETURNING id, created_at",
            )
            .bind(user_id)
            .bind(provider_id)
            .bind(sealed)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .op("store a provider session")?;
            let session = IdpSession {
                id: row.int("id")?,
                user: user.to_owned(),
                provider: provider.to_owned(),
                refresh_token: refresh_token.clone(),
                created_at: time(row.int("created_at")?),
                updated_at: time(at),
                last_checked_at: time(at),
            };
            (session, Entry::new("idp_session.put", target))
        })
    }

    /// `user`'s session with `provider`, refresh token opened.
    pub async fn get_idp_session(
        &self,
        user: &str,
        provider: &str,
    ) -> Result<IdpSession, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM idp_sessions s JOIN users u ON u.id = s.user_id ",
                "JOIN providers p ON p.id = s.provider_id WHERE u.name = $1 AND p.name = $2"
            ))
            .bind(user)
            .bind(provider)
            .fetch_optional(pool)
            .await
            .op("read a provider session")?;
            row.map_or_else(
                || {
                    Err(not_found(format!(
                        "session of user {user:?} with provider {provider:?}"
                    )))
                },
                |r| self.session_from(&r),
            )
        })
    }

    /// The sessions last checked at or before `before`, least recently checked first: the ones
    /// due for a check with their provider.
    pub async fn idp_sessions_due(
        &self,
        before: SystemTime,
        limit: u32,
    ) -> Result<Vec<IdpSession>, StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM idp_sessions s JOIN users u ON u.id = s.user_id ",
                "JOIN providers p ON p.id = s.provider_id WHERE s.last_checked_at <= $1 ",
                "ORDER BY s.last_checked_at, s.id LIMIT $2"
            ))
            .bind(secs(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .op("list provider sessions due")?
            .iter()
            .map(|r| self.session_from(r))
            .collect()
        })
    }

    /// Records that the provider confirmed session `id` at `now`, with the refresh token it
    /// handed back when it rotated it. Not audited: this is upkeep, not a control action.
    pub async fn mark_idp_session_checked(
        &self,
        id: i64,
        rotated_refresh_token: Option<&Secret>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        write_tx!(self, |tx| {
            let row = sqlx::query("SELECT user_id, provider_id FROM idp_sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .op("read a provider session")?
                .ok_or_else(|| not_found(format!("provider session {id}")))?;
            let sealed = rotated_refresh_token
                .map(|t| {
                    self.seal(
                        t.expose().as_bytes(),
                        &session_context(row.int("user_id")?, row.int("provider_id")?),
                    )
                })
                .transpose()?;
            sqlx::query(
                "UPDATE idp_sessions SET last_checked_at = $1, \
                 refresh_token = COALESCE($2, refresh_token), \
                 updated_at = CASE WHEN $2 IS NULL THEN updated_at ELSE $1 END WHERE id = $3",
            )
            .bind(at)
            .bind(sealed)
            .bind(id)
            .execute(&mut *tx)
            .await
            .op("mark a provider session checked")?;
        })
    }

    /// Deletes `user`'s session with `provider` (logout, or the provider no longer knows them).
    pub async fn delete_idp_session(
        &self,
        actor: &str,
        user: &str,
        provider: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let target = format!("session of user {user:?} with provider {provider:?}");
        write_tx!(self, secs(now), actor, |tx| {
            let deleted = sqlx::query(
                "DELETE FROM idp_sessions \
                 WHERE user_id = (SELECT id FROM users WHERE name = $1) \
                   AND provider_id = (SELECT id FROM providers WHERE name = $2)",
            )
            .bind(user)
            .bind(provider)
            .execute(&mut *tx)
            .await
            .op("delete a provider session")?
            .rows_affected();
            if deleted == 0 {
                return Err(not_found(target));
            }
            ((), Entry::new("idp_session.delete", target))
        })
    }
}
