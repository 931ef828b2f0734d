//! OpenID Connect logins in flight, kept in the store so any replica can finish them.

use std::time::SystemTime;

use super::{Columns as _, Op as _, Store, StoreError, secs, time};

/// A login in flight: what its end is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The provider's name in Infra.
    pub provider: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Where the provider sends the browser back (the code exchange repeats it).
    pub redirect_uri: String,
    /// The S256 PKCE challenge the verifier must match.
    pub code_challenge: String,
    /// When the login stops being accepted.
    pub expires_at: SystemTime,
}

impl Store {
    /// Keeps a login in flight under `key` (see [`crate::oidc::state_key`]) for `client` (its
    /// address key), after dropping expired ones. Answers false, keeping nothing, when `max`
    /// live logins are already in flight, or `per_client` of this client's.
    pub async fn put_oidc_login(
        &self,
        key: &str,
        login: &PendingLogin,
        client: &str,
        now: SystemTime,
        max: i64,
        per_client: i64,
    ) -> Result<bool, StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
                .bind(secs(now))
                .execute(&mut *tx)
                .await
                .op("drop expired logins")?;
            let live = sqlx::query("SELECT COUNT(*) AS n FROM oidc_logins")
                .fetch_one(&mut *tx)
                .await
                .op("count logins in flight")?
                .int("n")?;
            if live >= max {
                return Ok(false);
            }
            let theirs = sqlx::query("SELECT COUNT(*) AS n FROM oidc_logins WHERE client = $1")
                .bind(client)
                .fetch_one(&mut *tx)
                .await
                .op("count a client's logins in flight")?
                .int("n")?;
            if !client.is_empty() && theirs >= per_client {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO oidc_logins (state_sha256, provider, nonce, redirect_uri, \
                 code_challenge, expires_at, client) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(key)
            .bind(&login.provider)
            .bind(&login.nonce)
            .bind(&login.redirect_uri)
            .bind(&login.code_challenge)
            .bind(secs(login.expires_at))
            .bind(client)
            .execute(&mut *tx)
            .await
            .op("keep a login in flight")?;
            true
        })
    }

    /// Takes the login in flight under `key` out of the store: one caller gets it, on any
    /// replica; every later one gets `None`. Expiry is the caller's to check.
    pub async fn take_oidc_login(&self, key: &str) -> Result<Option<PendingLogin>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "DELETE FROM oidc_logins WHERE state_sha256 = $1 \
                 RETURNING provider, nonce, redirect_uri, code_challenge, expires_at",
            )
            .bind(key)
            .fetch_optional(pool)
            .await
            .op("take a login in flight")?;
            row.map(|r| {
                Ok(PendingLogin {
                    provider: r.text("provider")?,
                    nonce: r.text("nonce")?,
                    redirect_uri: r.text("redirect_uri")?,
                    code_challenge: r.text("code_challenge")?,
                    expires_at: time(r.int("expires_at")?),
                })
            })
            .transpose()
        })
    }
}
