//! Token signing keys, their private halves sealed at rest.

use std::time::SystemTime;

use super::{Entry, Op as _, Store, StoreError, not_found, secs, time};
use crate::crypto::SecretBytes;

/// A new token signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSigningKey {
    /// The key id (`kid`).
    pub kid: String,
    /// The JOSE algorithm (`EdDSA`).
    pub algorithm: String,
    /// The public half (as published in the JWKS).
    pub public_key: Vec<u8>,
    /// The private half (PKCS#8); sealed at rest.
    pub private_key: SecretBytes,
}

/// A token signing key as stored, private half opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The key id (`kid`).
    pub kid: String,
    /// The JOSE algorithm.
    pub algorithm: String,
    /// The public half.
    pub public_key: Vec<u8>,
    /// The private half.
    pub private_key: SecretBytes,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it stopped signing (it is still published until deleted).
    pub retired_at: Option<SystemTime>,
}

fn signing_key_context(kid: &str) -> String {
    format!("signing_key:{kid}:private_key")
}

impl Store {
    /// Stores a new token signing key; its private half is sealed at rest.
    pub async fn add_signing_key(
        &self,
        actor: &str,
        key: &NewSigningKey,
        now: SystemTime,
    ) -> Result<SigningKey, StoreError> {
        let sealed = self.seal(key.private_key.expose(), &signing_key_context(&key.kid))?;
        let at = secs(now);
        let target = format!("signing key {:?}", key.kid);
        write_tx!(self, at, actor, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_key, private_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING",
            )
            .bind(key.kid.as_str())
            .bind(key.algorithm.as_str())
            .bind(key.public_key.clone())
            .bind(sealed)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("store a signing key")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists { what: target });
            }
            let stored = SigningKey {
                kid: key.kid.clone(),
                algorithm: key.algorithm.clone(),
                public_key: key.public_key.clone(),
                private_key: key.private_key.clone(),
                created_at: time(at),
                retired_at: None,
            };
            let entry = Entry::new("signing_key.create", target).detail(key.algorithm.clone());
            (stored, entry)
        })
    }

    /// All signing keys, oldest first, private halves opened.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.fetch_all(
            "SELECT kid, algorithm, public_key, private_key, created_at, retired_at \
             FROM signing_keys ORDER BY created_at, kid",
            None,
            "list signing keys",
            |row| {
                let kid = row.text("kid")?;
                Ok(SigningKey {
                    private_key: self
                        .unseal(&row.blob("private_key")?, &signing_key_context(&kid))?,
                    algorithm: row.text("algorithm")?,
                    public_key: row.blob("public_key")?,
                    created_at: time(row.int("created_at")?),
                    retired_at: row.opt_int("retired_at")?.map(time),
                    kid,
                })
            },
        )
        .await
    }

    /// Stops signing with key `kid` (it stays published until deleted).
    pub async fn retire_signing_key(
        &self,
        actor: &str,
        kid: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        let target = format!("signing key {kid:?}");
        write_tx!(self, at, actor, |tx| {
            let updated = sqlx::query(
                "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1) WHERE kid = $2",
            )
            .bind(at)
            .bind(kid)
            .execute(&mut *tx)
            .await
            .op("retire a signing key")?
            .rows_affected();
            if updated == 0 {
                return Err(not_found(target));
            }
            ((), Entry::new("signing_key.retire", target))
        })
    }

    /// Deletes signing key `kid`.
    pub async fn delete_signing_key(
        &self,
        actor: &str,
        kid: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM signing_keys WHERE kid = $1",
            kid,
            "delete a signing key",
            "signing_key.delete",
            format!("signing key {kid:?}"),
            now,
        )
        .await
    }
}
