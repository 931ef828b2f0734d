//! Password logins and their lockout. Every guess is counted in the store before it is checked,
//! atomically, so replicas share one count and concurrency cannot slip guesses past it. Counts
//! are kept per account and bucket: each client address that has logged in to the account before
//! has its own bucket, every other address shares the bucket `*`. Anonymous clients can then
//! exhaust only the shared bucket, never the owner's usual addresses, and at most
//! [`LOCKOUT_FAILURES`] guesses per [`LOCKOUT_DURATION`] are ever checked from new addresses.

use std::time::{Duration, SystemTime};

use infra_authz::policy::Secret;

use super::{Columns as _, Op as _, Store, StoreError, User, duration_secs, secs, time};
use crate::passwords::Verification;

/// Failed logins before an account locks.
pub const LOCKOUT_FAILURES: i64 = 5;

/// How long a lock lasts, and the window in which failures add up.
pub const LOCKOUT_DURATION: Duration = Duration::from_mins(30);

/// Why a password login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The user is unknown, has no password, or the password is wrong: one answer for all, given
    /// in the same time.
    #[error("the user name or password is wrong")]
    InvalidCredentials,
    /// Too many failed logins for this name; refused until `until`.
    #[error("too many failed logins; try again later")]
    Locked {
        /// When the lock lifts.
        until: SystemTime,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bucket of addresses an account has never logged in from.
pub const UNKNOWN_CLIENTS: &str = "*";

impl Store {
    async fn password_hash(&self, name: &str) -> Result<Option<(i64, String)>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .op("read a password hash")?;
            match row {
                Some(row) => Ok(row
                    .opt_text("password_hash")?
                    .map(|h| row.int("id").map(|id| (id, h)))
                    .transpose()?),
                None => Ok(None),
            }
        })
    }

    /// Logs in with a password, from `client` (the client's address key, see
    /// [`crate::clients::ClientAddr`]; empty when unknown).
    ///
    /// The guess is counted first, in the bucket of `client` if the account has logged in from
    /// there before, else in the shared bucket; past [`LOCKOUT_FAILURES`] guesses within
    /// [`LOCKOUT_DURATION`] the bucket is locked until its window ends and the password is not
    /// looked at. An unknown user, a user without a password and a wrong password all give
    /// [`LoginError::InvalidCredentials`], after the same Argon2id work (a dummy hash stands in).
    /// Success clears the bucket's count, makes `client` a known address of the account, and
    /// rehashes the password when the stored hash has other parameters.
    pub async fn login_with_password(
        &self,
        name: &str,
        password: &Secret,
        client: &str,
        now: SystemTime,
    ) -> Result<User, LoginError> {
        let bucket = self.bucket(name, client).await?;
        let (attempts, window_start) = self.count_attempt(name, &bucket, now).await?;
        if attempts > LOCKOUT_FAILURES {
            return Err(LoginError::Locked {
                until: window_start + LOCKOUT_DURATION,
            });
        }
        let stored = self.password_hash(name).await?;
        let verdict = self
            .passwords
            .verify(password, stored.as_ref().map(|(_, h)| h.as_str()))
            .await;
        let (Verification::Match { needs_rehash }, Some((id, old_hash))) = (verdict, stored) else {
            self.append_audit(
                "anonymous",
                "user.login.failed",
                &format!("user {name:?}"),
                &format!("password from {client:?}"),
                now,
            )
            .await?;
            if attempts == LOCKOUT_FAILURES {
                tracing::warn!(
                    user = name,
                    client,
                    bucket,
                    "too many failed logins; locked"
                );
                self.append_audit(
                    "system",
                    "user.login.locked",
                    &format!("user {name:?}"),
                    &format!(
                        "addresses {bucket:?} until {}",
                        secs(window_start + LOCKOUT_DURATION)
                    ),
                    now,
                )
                .await?;
            }
            return Err(LoginError::InvalidCredentials);
        };
        self.login_succeeded(name, &bucket, client, now).await?;
        if needs_rehash {
            let hash = self
                .passwords
                .hash(password)
                .await
                .map_err(StoreError::from)?;
            with_db!(self, |pool, _begin| {
                sqlx::query(
                    "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
                )
                .bind(hash)
                .bind(id)
                .bind(old_hash)
                .execute(pool)
                .await
                .op("store a rehashed password")?;
            });
        }
        self.append_audit(
            name,
            "user.login",
            &format!("user {name:?}"),
            &format!("password from {client:?}"),
            now,
        )
        .await?;
        Ok(self.get_user(name).await?)
    }

    /// The bucket `client`'s guesses at `name` count in.
    async fn bucket(&self, name: &str, client: &str) -> Result<String, StoreError> {
        if client.is_empty() || client == UNKNOWN_CLIENTS {
            return Ok(UNKNOWN_CLIENTS.to_owned());
        }
        with_db!(self, |pool, _begin| {
            let known = sqlx::query(
                "SELECT 1 AS known FROM login_known_clients WHERE name = $1 AND client = $2",
            )
            .bind(name)
            .bind(client)
            .fetch_optional(pool)
            .await
            .op("look up a known client")?
            .is_some();
            Ok(if known {
                client.to_owned()
            } else {
                UNKNOWN_CLIENTS.to_owned()
            })
        })
    }

    /// Counts one guess at `name` in `bucket`, in one atomic statement; answers the guesses in
    /// the current window (this one included) and when the window began.
    async fn count_attempt(
        &self,
        name: &str,
        bucket: &str,
        now: SystemTime,
    ) -> Result<(i64, SystemTime), StoreError> {
        let at = secs(now);
        let window = duration_secs(LOCKOUT_DURATION);
        with_db!(self, |pool, _begin| {
            // Counts whose window is over say nothing any more: drop them, so guesses at made-up
            // names leave nothing behind for long.
            sqlx::query("DELETE FROM login_attempts WHERE window_start <= $1")
                .bind(at - window)
                .execute(pool)
                .await
                .op("drop old login attempts")?;
            let row = sqlx::query(
                "INSERT INTO login_attempts (name, bucket, attempts, window_start) \
                 VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name, bucket) DO UPDATE SET \
                   attempts = CASE WHEN login_attempts.window_start <= $4 THEN 1 \
                     ELSE login_attempts.attempts + 1 END, \
                   window_start = CASE WHEN login_attempts.window_start <= $4 THEN $3 \
                     ELSE login_attempts.window_start END \
                 RETURNING attempts, window_start",
            )
            .bind(name)
            .bind(bucket)
            .bind(at)
            .bind(at - window)
            .fetch_one(pool)
            .await
            .op("count a login attempt")?;
            Ok((row.int("attempts")?, time(row.int("window_start")?)))
        })
    }

    /// After a good password: the bucket starts over, and `client` is a known address of `name`.
    async fn login_succeeded(
        &self,
        name: &str,
        bucket: &str,
        client: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM login_attempts WHERE name = $1 AND bucket = $2")
                .bind(name)
                .bind(bucket)
                .execute(&mut *tx)
                .await
                .op("start the login count over")?;
            if !client.is_empty() && client != UNKNOWN_CLIENTS {
                sqlx::query(
                    "INSERT INTO login_known_clients (name, client, last_login) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (name, client) DO UPDATE SET last_login = $3",
                )
                .bind(name)
                .bind(client)
                .bind(secs(now))
                .execute(&mut *tx)
                .await
                .op("remember a known client")?;
            }
        })
    }

    /// Whether `password` is `name`'s password (no lockout counting: for the policy file's
    /// reconcile, not for logins).
    pub async fn password_matches(
        &self,
        name: &str,
        password: &Secret,
    ) -> Result<bool, StoreError> {
        let stored = self.password_hash(name).await?;
        Ok(matches!(
            self.passwords
                .verify(password, stored.as_ref().map(|(_, h)| h.as_str()))
                .await,
            Verification::Match {
                needs_rehash: false
            }
        ))
    }

    /// When the lock on logins as `name` from `client` lifts, if it is locked at `now`.
    pub async fn locked_until(
        &self,
        name: &str,
        client: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let bucket = self.bucket(name, client).await?;
        let at = secs(now);
        let window = duration_secs(LOCKOUT_DURATION);
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "SELECT attempts, window_start FROM login_attempts WHERE name = $1 AND bucket = $2",
            )
            .bind(name)
            .bind(&bucket)
            .fetch_optional(pool)
            .await
            .op("read login attempts")?;
            let Some(row) = row else { return Ok(None) };
            let (attempts, start) = (row.int("attempts")?, row.int("window_start")?);
            Ok((attempts >= LOCKOUT_FAILURES && start > at - window).then(|| time(start + window)))
        })
    }

    /// Forgets every counted guess at `name` (an admin's unlock): every bucket starts over.
    pub async fn clear_login_failures(&self, name: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query("DELETE FROM login_attempts WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .op("clear login attempts")?;
            Ok(())
        })
    }
}
