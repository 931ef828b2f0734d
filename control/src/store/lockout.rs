//! Password logins and their lockout: failed logins counted per name, shared by the replicas.

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

/// Failed logins counted for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    /// Failures in the current window.
    pub failures: i64,
    /// When set, logins are refused until then.
    pub locked_until: Option<SystemTime>,
}

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

    /// Logs in with a password.
    ///
    /// A locked name is refused without looking at the password. An unknown user, a user
    /// without a password and a wrong password all give [`LoginError::InvalidCredentials`],
    /// after the same Argon2id work (a dummy hash stands in), and all count as a failure for
    /// the name. The [`LOCKOUT_FAILURES`]th failure within [`LOCKOUT_DURATION`] locks the name
    /// for [`LOCKOUT_DURATION`]. Success clears the count, and rehashes the password when the
    /// stored hash has other parameters.
    pub async fn login_with_password(
        &self,
        name: &str,
        password: &Secret,
        now: SystemTime,
    ) -> Result<User, LoginError> {
        if let Some(until) = self.locked_until(name, now).await? {
            return Err(LoginError::Locked { until });
        }
        let stored = self.password_hash(name).await?;
        let verdict = self
            .passwords
            .verify(password, stored.as_ref().map(|(_, h)| h.as_str()))
            .await;
        let (Verification::Match { needs_rehash }, Some((id, old_hash))) = (verdict, stored) else {
            let failures = self.record_login_failure(name, now).await?;
            if let Some(until) = failures.locked_until
                && failures.failures == LOCKOUT_FAILURES
            {
                tracing::warn!(user = name, "too many failed logins; locked");
                self.append_audit(
                    "system",
                    "user.login.locked",
                    &format!("user {name:?}"),
                    &format!("until {}", secs(until)),
                    now,
                )
                .await?;
            }
            return Err(LoginError::InvalidCredentials);
        };
        self.clear_login_failures(name).await?;
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
            "password",
            now,
        )
        .await?;
        Ok(self.get_user(name).await?)
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

    /// When the lock on logins as `name` lifts, if it is locked at `now`.
    pub async fn locked_until(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        with_db!(self, |pool, _begin| {
            let row = sqlx::query("SELECT locked_until FROM login_failures WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .op("read failed logins")?;
            let until = match row {
                Some(row) => row.opt_int("locked_until")?,
                None => None,
            };
            Ok(until.filter(|&u| u > secs(now)).map(time))
        })
    }

    /// Counts a failed login for `name` (known or not) and locks it on the
    /// [`LOCKOUT_FAILURES`]th failure within [`LOCKOUT_DURATION`]. Atomic, so replicas share
    /// one count.
    pub async fn record_login_failure(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<LoginFailures, StoreError> {
        let at = secs(now);
        let window = duration_secs(LOCKOUT_DURATION);
        // The window restarts when it is over (and no lock is set) or when a lock has lifted.
        with_db!(self, |pool, _begin| {
            let row = sqlx::query(
                "INSERT INTO login_failures (name, failures, window_start, locked_until) \
                 VALUES ($1, 1, $2, NULL) \
                 ON CONFLICT (name) DO UPDATE SET \
                   failures = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN 1 \
                     ELSE login_failures.failures + 1 END, \
                   window_start = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN $2 \
                     ELSE login_failures.window_start END, \
                   locked_until = CASE \
                     WHEN (login_failures.locked_until IS NULL AND login_failures.window_start <= $3) \
                       OR login_failures.locked_until <= $2 THEN NULL \
                     WHEN login_failures.failures + 1 >= $4 THEN $5 \
                     ELSE login_failures.locked_until END \
                 RETURNING failures, locked_until",
            )
            .bind(name)
            .bind(at)
            .bind(at - window)
            .bind(LOCKOUT_FAILURES)
            .bind(at + window)
            .fetch_one(pool)
            .await
            .op("count a failed login")?;
            Ok(LoginFailures {
                failures: row.int("failures")?,
                locked_until: row.opt_int("locked_until")?.map(time),
            })
        })
    }

    /// Forgets the failed logins of `name` (after a successful login, or by an admin).
    pub async fn clear_login_failures(&self, name: &str) -> Result<(), StoreError> {
        with_db!(self, |pool, _begin| {
            sqlx::query("DELETE FROM login_failures WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .op("clear failed logins")?;
            Ok(())
        })
    }
}
