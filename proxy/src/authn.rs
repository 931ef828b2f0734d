//! Authentication: which token issuers this proxy trusts, and the verified-token caches.
//!
//! Two kinds of issuer:
//!
//! - **Infra** (or any issuer of the same token shape): an issuer name and its keys from a JWKS
//!   file (re-read when it changes) or URL. Tokens carry this proxy's destination as `aud`, the
//!   user in `name`, the groups in `groups`.
//! - **An external OpenID Connect issuer** whose ID tokens are accepted as kube-oidc-proxy and the
//!   apiserver's `--oidc-*` flags accept them: discovery at `/.well-known/openid-configuration`,
//!   its JWKS, the client id as audience, and a claim mapping with optional prefixes.
//!
//! Keys are fetched at start and again when a token names an unknown `kid`, at most once every
//! [`REFETCH_INTERVAL`] per issuer, so a flood of made-up `kid`s cannot make us hammer the
//! issuer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use infra_authz::decision::Identity;
use infra_authz::token::{
    ClaimMapping, Jwk, Jwks, TokenCache, TokenCacheConfig, TokenError, Verifier,
};

use crate::metrics::Metrics;
use crate::sync::{Sessions, SyncState};

/// The least time between two key fetches of one issuer, when tokens name unknown keys.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS URL.
    Url(String),
    /// OpenID Connect discovery of this issuer URL.
    Discovery(String),
    /// The policy snapshot of Infra's control plane (in this process, or synced from it).
    Snapshot(Arc<SyncState>),
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry for this proxy.
    pub audience: String,
    /// Where its keys come from.
    pub keys: KeySource,
    /// How its claims become a user and groups.
    pub mapping: ClaimMapping,
    /// For Infra's control plane: the live sessions and current groups of its users.
    pub sessions: Option<Arc<ArcSwap<Sessions>>>,
}

/// What a verified token says, kept in the token cache.
#[derive(Debug)]
struct Verified {
    identity: Identity,
    session: Option<String>,
}

#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    verifier: ArcSwap<Option<Verifier>>,
    /// Verified tokens, each with the identity built from it once.
    /// Verified tokens: the identity built from each once, and its session claim.
    cache: TokenCache<Verified>,
    last_fetch: Mutex<Option<Instant>>,
    /// The public keys the verifier in force trusts, sorted by kid.
    keys_in_force: Mutex<Vec<Jwk>>,
    /// Fetches are serialized so concurrent misses make one request.
    fetching: tokio::sync::Mutex<()>,
}

/// Why a token was refused. Only logged (at debug): the client always gets a plain 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No configured issuer matches the token's `iss`.
    #[error("no trusted issuer matches the token")]
    UnknownIssuer,
    /// The issuer's keys are not loaded yet.
    #[error("the keys of issuer {0} are not loaded yet")]
    KeysNotLoaded(String),
    /// The token did not verify.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The session the token was traded for has ended (logout, a deleted key or user).
    #[error("the session of the token has ended")]
    SessionEnded,
}

/// Verifies bearer tokens against the trusted issuers.
#[derive(Debug)]
pub struct Authenticator {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Builds the authenticator and loads every issuer's keys. A JWKS file that cannot be read is
    /// an error; a URL or discovery that cannot be reached now is retried in the background.
    pub async fn new(
        issuers: Vec<IssuerConfig>,
        ca_file: Option<&std::path::Path>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        if issuers.is_empty() {
            bail!(
                "no token issuer is configured: give --issuer with --jwks-file or --jwks-url, or --oidc-issuer-url"
            );
        }
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading issuer CA file {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing issuer CA file {}", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .context("building the HTTP client for issuers")?;
        let this = Arc::new(Self {
            issuers: issuers
                .into_iter()
                .map(|config| Issuer {
                    config,
                    verifier: ArcSwap::from_pointee(None),
                    cache: TokenCache::new(TokenCacheConfig::default()),
                    last_fetch: Mutex::new(None),
                    keys_in_force: Mutex::new(Vec::new()),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            http,
            metrics,
        });
        for issuer in &this.issuers {
            match this.refresh(issuer).await {
                Ok(()) => {}
                Err(error) if matches!(issuer.config.keys, KeySource::File(_)) => {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(issuer = %issuer.config.issuer, error = format!("{error:#}"), "cannot load the issuer's keys yet; retrying in the background");
                }
            }
        }
        Ok(this)
    }

    /// Whether every issuer has keys loaded, or which has not.
    pub fn keys_loaded(&self) -> Result<(), String> {
        for issuer in &self.issuers {
            if issuer.verifier.load().is_none() {
                return Err(format!(
                    "keys of issuer {} not loaded",
                    issuer.config.issuer
                ));
            }
        }
        Ok(())
    }

    /// Re-reads file keys when they change and retries issuers without keys, every `every`.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for issuer in &this.issuers {
                    let due = matches!(
                        issuer.config.keys,
                        KeySource::File(_) | KeySource::Snapshot(_)
                    ) || issuer.verifier.load().is_none();
                    if due && let Err(error) = this.refresh(issuer).await {
                        tracing::warn!(issuer = %issuer.config.issuer, error = format!("{error:#}"), "cannot refresh the issuer's keys");
                    }
                }
            }
        });
    }

    async fn fetch_jwks(&self, source: &KeySource, issuer: &str) -> Result<Jwks> {
        let text = match source {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading JWKS file {}", path.display()))?,
            KeySource::Url(url) => self.get_text(url).await?,
            KeySource::Snapshot(state) => {
                return state
                    .jwks()
                    .ok_or_else(|| anyhow!("no policy snapshot from the control plane yet"));
            }
            KeySource::Discovery(base) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    base.trim_end_matches('/')
                );
                let document: serde_json::Value = serde_json::from_str(&self.get_text(&url).await?)
                    .with_context(|| format!("parsing {url}"))?;
                let advertised = document.get("issuer").and_then(|v| v.as_str());
                if advertised != Some(issuer) {
                    bail!("{url} names issuer {advertised:?}, not {issuer:?}; refusing its keys");
                }
                let jwks_uri = document
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| anyhow!("{url} has no jwks_uri"))?;
                self.get_text(jwks_uri).await?
            }
        };
        Jwks::from_json(&text).map_err(|e| anyhow!("parsing the JWKS of {issuer}: {e}"))
    }

    async fn get_text(&self, url: &str) -> Result<String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?;
        if !response.status().is_success() {
            bail!("fetching {url}: HTTP {}", response.status());
        }
        response
            .text()
            .await
            .with_context(|| format!("reading {url}"))
    }

    /// Fetches the issuer's keys and puts them in force when they differ from the keys in force:
    /// new keys are trusted, and keys the issuer no longer publishes stop being trusted. An
    /// unchanged key set keeps the current verifier (and so its cached tokens).
    async fn refresh(&self, issuer: &Issuer) -> Result<()> {
        let _one = issuer.fetching.lock().await;
        self.refresh_locked(issuer).await
    }

    /// [`Self::refresh`], but only if the last fetch is [`REFETCH_INTERVAL`] old. The check is
    /// made under the fetch lock, so concurrent unknown kids make one fetch, not one each.
    async fn refetch_if_due(&self, issuer: &Issuer) -> Result<()> {
        let _one = issuer.fetching.lock().await;
        if Self::may_refetch(issuer) {
            self.refresh_locked(issuer).await
        } else {
            Ok(())
        }
    }

    async fn refresh_locked(&self, issuer: &Issuer) -> Result<()> {
        *issuer
            .last_fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let jwks = self
            .fetch_jwks(&issuer.config.keys, &issuer.config.issuer)
            .await?;
        let mut keys: Vec<Jwk> = jwks
            .trusted_keys()
            .iter()
            .map(|k| k.jwk().clone())
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let mut in_force = issuer
            .keys_in_force
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if issuer.verifier.load().is_some() && *in_force == keys {
            return Ok(());
        }
        let verifier = Verifier::builder(issuer.config.issuer.clone())
            .trust_jwks(&jwks)
            .claim_mapping(issuer.config.mapping.clone())
            .build()
            .map_err(|e| anyhow!("the keys of {}: {e}", issuer.config.issuer))?;
        tracing::info!(issuer = %issuer.config.issuer, keys = keys.len(), "issuer keys in force");
        issuer.verifier.store(Arc::new(Some(verifier)));
        *in_force = keys;
        Ok(())
    }

    fn may_refetch(issuer: &Issuer) -> bool {
        // The snapshot's keys are in memory: reading them again costs nothing, and a proxy that
        // started before its first snapshot must not wait out the network back-off.
        if matches!(issuer.config.keys, KeySource::Snapshot(_)) {
            return true;
        }
        issuer
            .last_fetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL)
    }

    /// Verifies `token` at `now`, returning the identity to impersonate.
    pub async fn authenticate(&self, token: &str, now: SystemTime) -> Result<Identity, AuthnError> {
        let issuer = self.issuer_for(token).ok_or(AuthnError::UnknownIssuer)?;
        let (identity, hit) = match Self::verify_with(issuer, token, now) {
            Err(AuthnError::Token(TokenError::UnknownKid(_)) | AuthnError::KeysNotLoaded(_))
                if Self::may_refetch(issuer) =>
            {
                if let Err(error) = Box::pin(self.refetch_if_due(issuer)).await {
                    tracing::warn!(issuer = %issuer.config.issuer, error = format!("{error:#}"), "refetching keys for an unknown kid failed");
                }
                Self::verify_with(issuer, token, now)
            }
            other => other,
        }?;
        self.metrics.cache_lookup(&self.metrics.token_cache, hit);
        Ok(identity)
    }

    fn verify_with(
        issuer: &Issuer,
        token: &str,
        now: SystemTime,
    ) -> Result<(Identity, bool), AuthnError> {
        let verifier = issuer.verifier.load();
        let Some(verifier) = verifier.as_ref() else {
            return Err(AuthnError::KeysNotLoaded(issuer.config.issuer.clone()));
        };
        let (identity, hit) = issuer.cache.verify_mapped_into(
            verifier,
            token,
            &issuer.config.audience,
            now,
            |claims| Verified {
                identity: Identity::new(claims.user, claims.groups),
                session: claims.session,
            },
        )?;
        // Infra's own tokens: believe the snapshot, not the token, about the session and groups.
        if let Some(sessions) = &issuer.config.sessions {
            return sessions
                .load()
                .identity(identity.session.as_deref(), &identity.identity)
                .map(|identity| (identity, hit))
                .ok_or(AuthnError::SessionEnded);
        }
        Ok((identity.identity.clone(), hit))
    }

    /// The issuer a token claims, when several are configured; the only one otherwise. Reading
    /// the unverified `iss` only routes the token: the chosen verifier checks it again.
    fn issuer_for(&self, token: &str) -> Option<&Issuer> {
        if let [only] = self.issuers.as_slice() {
            return Some(only);
        }
        let iss = unverified_issuer(token)?;
        self.issuers.iter().find(|i| i.config.issuer == iss)
    }

    /// The metrics this authenticator reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    if token.len() > infra_authz::token::MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}
