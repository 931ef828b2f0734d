//! Signing tokens: the keys in force, daily rotation (a new key published before it signs, old
//! ones kept until their last token expires), sessions and the tokens traded for them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use infra_authz::policy::Secret;
use infra_authz::token::{
    IssuedToken, Issuer, Jwks, SigningAlgorithm, SigningKey as TokenKey, TokenRequest,
};

use super::{ControlConfig, ControlPlane, SYSTEM_ACTOR};
use crate::Store;
use crate::crypto::SecretBytes;
use crate::store::{NewAccessKey, NewSigningKey, User};

/// The keys in force: the one that signs, and every one that is published.
#[derive(Debug)]
pub(super) struct Keys {
    issuer: Issuer,
    jwks: Jwks,
    jwks_json: String,
}

impl ControlPlane {
    /// The published public keys.
    pub fn jwks(&self) -> Jwks {
        self.keys.load().jwks.clone()
    }

    /// The published public keys as JSON.
    pub fn jwks_json(&self) -> String {
        self.keys.load().jwks_json.clone()
    }

    /// Issues a token for `user` at `destination`, with the user's current groups, traded for
    /// the session (access key) `session`.
    pub async fn issue_token(
        &self,
        user: &User,
        destination: &str,
        session: Option<&crate::store::AccessKey>,
    ) -> Result<IssuedToken> {
        let groups = self.store.groups_of(&user.name).await?;
        let keys = self.keys.load();
        keys.issuer
            .issue(
                &TokenRequest {
                    user_id: &user.id.to_string(),
                    name: &user.name,
                    groups: &groups,
                    audience: destination,
                    ttl: self.config.token_ttl,
                    session: session.map(|key| infra_authz::token::SessionClaim {
                        id: &key.id,
                        started_at: infra_authz::policy::wire::unix(key.created_at),
                    }),
                },
                self.now(),
            )
            .map_err(|e| anyhow!("issuing a token: {e}"))
    }

    /// Makes a new session key for `user`.
    pub async fn new_session(&self, user: &str) -> Result<(crate::store::AccessKey, Secret)> {
        let now = self.now();
        Ok(self
            .store
            .create_access_key(user, user, &NewAccessKey::session(now), now)
            .await?)
    }

    /// One step of key rotation: adds a key when the newest is due, moves signing to the newest
    /// key published for long enough, retires the others, and deletes retired keys whose last
    /// token has expired. Returns whether the published set changed.
    pub async fn rotate_keys(&self) -> Result<bool> {
        let now = self.now();
        let stored = self.store.signing_keys().await?;
        let newest = stored.iter().map(|k| k.created_at).max();
        if newest
            .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= self.config.rotate_every)
        {
            add_key(&self.store, now).await?;
        }
        let before = self.keys.load().jwks_json.clone();
        let keys = load_keys(&self.store, &self.config, now, false).await?;
        let changed = keys.jwks_json != before;
        self.keys.store(Arc::new(keys));
        Ok(changed)
    }

    /// Runs key rotation every `every`.
    pub fn spawn_rotation(self: &Arc<Self>, every: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match this.rotate_keys().await {
                    Ok(true) => {
                        tracing::info!("token signing keys rotated");
                        this.changed();
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "token key rotation failed");
                    }
                }
                if let Err(error) = this.purge_old_audit_events().await {
                    tracing::warn!(error = %error, "removing old audit events failed");
                }
                match this.store.purge_expired(this.now()).await {
                    Ok(purged) => {
                        // Lapsed keys are ended sessions: proxies refuse their tokens at once.
                        this.sessions_ended(purged.ended);
                        if purged.grants > 0 {
                            this.changed();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "purging expired grants and keys failed");
                    }
                }
            }
        });
    }
}

pub(super) async fn add_key(store: &Store, now: SystemTime) -> Result<()> {
    let key = TokenKey::generate(SigningAlgorithm::EdDsa)
        .map_err(|e| anyhow!("generating a token signing key: {e}"))?;
    let public = serde_json::to_vec(key.public_jwk()).context("encoding a public key")?;
    store
        .add_signing_key(
            SYSTEM_ACTOR,
            &NewSigningKey {
                kid: key.kid().to_owned(),
                algorithm: key
                    .public_jwk()
                    .alg
                    .clone()
                    .unwrap_or_else(|| "EdDSA".to_owned()),
                public_key: public,
                private_key: SecretBytes::new(key.pkcs8().expose().to_vec()),
            },
            now,
        )
        .await?;
    Ok(())
}

/// Loads the stored keys and decides which signs: the newest one published for at least the
/// lead time (or, on a first start, the only one). Older keys are retired; retired keys whose
/// tokens have all expired are deleted.
pub(super) async fn load_keys(
    store: &Store,
    config: &ControlConfig,
    now: SystemTime,
    first_start: bool,
) -> Result<Keys> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        add_key(store, now).await?;
        stored = store.signing_keys().await?;
    }
    stored.sort_by_key(|k| k.created_at);
    let age = |at: SystemTime| now.duration_since(at).unwrap_or_default();
    let ready: Vec<_> = stored
        .iter()
        .filter(|k| k.retired_at.is_none() && age(k.created_at) >= config.publish_lead)
        .collect();
    let signer = match ready.last() {
        Some(k) => *k,
        // Nothing published long enough (a first start): the newest key that is not retired.
        None => stored
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .or(stored.last())
            .ok_or_else(|| anyhow!("no token signing key"))?,
    };
    let signer_kid = signer.kid.clone();
    let signer_created = signer.created_at;
    let mut published = Vec::new();
    for key in &stored {
        let older = key.created_at < signer_created;
        if key.kid != signer_kid && older && key.retired_at.is_none() {
            store
                .retire_signing_key(SYSTEM_ACTOR, &key.kid, now)
                .await?;
        }
        let retired_long_ago = key
            .retired_at
            .is_some_and(|at| age(at) > config.token_ttl + Duration::from_mins(1));
        if retired_long_ago && !first_start {
            store
                .delete_signing_key(SYSTEM_ACTOR, &key.kid, now)
                .await?;
            continue;
        }
        let parsed = TokenKey::from_pkcs8_der(key.private_key.expose())
            .map_err(|e| anyhow!("the stored signing key {}: {e}", key.kid))?;
        published.push(parsed);
    }
    let jwks = Jwks::from_signing_keys(published.iter());
    let jwks_json = jwks.to_json();
    let signing = published
        .into_iter()
        .find(|k| k.kid() == signer_kid)
        .ok_or_else(|| anyhow!("the signing key {signer_kid} is not loadable"))?;
    let issuer = Issuer::new(config.issuer.clone(), signing)
        .map_err(|e| anyhow!("the token issuer: {e}"))?;
    Ok(Keys {
        issuer,
        jwks,
        jwks_json,
    })
}
