//! Logging in and staying logged in: the three ways in (password, access key, OpenID Connect),
//! the groups a provider vouches for, and re-verification with the provider when its last word
//! is old. The HTTP layer only reads requests and writes answers around these.

use std::collections::BTreeSet;

use infra_api::LoginRequest;
use infra_authz::policy::Secret;

use crate::oidc::{self, OidcError};
use crate::plane::{ControlPlane, owned};
use crate::store::{KeyError, KeyKind, LoginError, StoreError, User};

/// Why a login (or a session's re-verification) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginFailure {
    /// The name, password or key is wrong (one answer for all).
    #[error("{0}")]
    InvalidCredentials(String),
    /// Too many failed logins for this name.
    #[error("too many failed logins for this user")]
    Locked,
    /// The identity provider no longer vouches for the user.
    #[error("{0}")]
    Refused(String),
    /// Talking to the identity provider failed, or it refused the login.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else of the plane's failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The OIDC login a client is to send the browser to.
#[derive(Debug)]
pub struct OidcRedirect {
    /// The provider's authorization URL.
    pub authorize_url: String,
    /// The single-use state that comes back with the code.
    pub state: String,
}

impl ControlPlane {
    /// The user `request` proves to be.
    pub async fn log_in(&self, request: LoginRequest) -> Result<User, LoginFailure> {
        let now = self.now();
        let store = self.store();
        match request {
            LoginRequest::Password { name, password } => {
                match store
                    .login_with_password(&name, &Secret::new(password), now)
                    .await
                {
                    Ok(user) => Ok(user),
                    Err(LoginError::InvalidCredentials) => Err(LoginFailure::InvalidCredentials(
                        LoginError::InvalidCredentials.to_string(),
                    )),
                    Err(LoginError::Locked { .. }) => Err(LoginFailure::Locked),
                    Err(LoginError::Store(e)) => Err(e.into()),
                }
            }
            LoginRequest::AccessKey(key) => {
                match store.authenticate_access_key(&Secret::new(key), now).await {
                    Ok((_, user)) => Ok(user),
                    Err(KeyError::Store(e)) => Err(e.into()),
                    Err(other) => Err(LoginFailure::InvalidCredentials(other.to_string())),
                }
            }
            LoginRequest::Oidc {
                state,
                code,
                code_verifier,
            } => self.finish_oidc_login(&state, &code, &code_verifier).await,
        }
    }

    /// Starts a login at `provider`: where to send the browser, with the state kept in the
    /// store (so any replica can finish it).
    pub async fn start_oidc_login(
        &self,
        provider: &str,
        redirect_uri: &str,
        code_challenge: &str,
    ) -> Result<OidcRedirect, LoginFailure> {
        let provider = self.store().get_provider(provider).await?.provider;
        let now = self.now();
        let (authorize_url, state, pending) = self
            .oidc
            .start(&provider, redirect_uri, code_challenge, now)
            .await?;
        if !self
            .store()
            .put_oidc_login(&oidc::state_key(&state), &pending, now, oidc::MAX_PENDING)
            .await?
        {
            return Err(OidcError::Unavailable(
                "too many logins in flight; try again in a minute".into(),
            )
            .into());
        }
        Ok(OidcRedirect {
            authorize_url,
            state,
        })
    }

    async fn finish_oidc_login(
        &self,
        state: &str,
        code: &str,
        code_verifier: &str,
    ) -> Result<User, LoginFailure> {
        let now = self.now();
        let store = self.store();
        // Used up here, once, whatever happens next (and on whichever replica it started).
        let pending = store
            .take_oidc_login(&oidc::state_key(state))
            .await?
            .ok_or(OidcError::UnknownState)?;
        let name = pending.provider.clone();
        let provider = store.get_provider(&name).await?.provider;
        let vouched = self
            .oidc
            .finish(&provider, pending, code, code_verifier, now)
            .await?;
        let user = match store.get_user(&vouched.email).await {
            Ok(user) => user,
            Err(StoreError::NotFound { .. }) => {
                store
                    .create_user(&format!("provider:{name}"), &vouched.email, now)
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        self.sync_provider_groups(&name, &user.name, &vouched.groups)
            .await?;
        if let Some(refresh) = &vouched.refresh_token {
            store
                .put_idp_session(&user.name, &user.name, &name, refresh, now)
                .await?;
        }
        Ok(user)
    }

    /// Makes `user`'s memberships that `provider` manages match `groups`.
    async fn sync_provider_groups(
        &self,
        provider: &str,
        user: &str,
        groups: &[String],
    ) -> Result<(), StoreError> {
        let store = self.store();
        let now = self.now();
        let owner = owned::idp_groups(provider, user);
        let actor = format!("provider:{provider}");
        let before = store.managed(&owner).await?;
        let mut after = BTreeSet::new();
        for group in groups {
            if infra_authz::policy::validate_subject_name(group).is_err() {
                tracing::warn!(provider, group = %group, "ignoring a group name Infra does not accept");
                continue;
            }
            match store.create_group(&actor, group, now).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            store.add_member(&actor, group, user, now).await?;
            after.insert(group.clone());
        }
        for gone in before.difference(&after) {
            match store.remove_member(&actor, gone, user, now).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        store.set_managed(&owner, &after).await?;
        if before != after {
            self.changed();
        }
        Ok(())
    }

    /// Asks each provider the user logged in with, when its last answer is old, whether it still
    /// knows the user. A refusal ends the user's sessions.
    pub async fn reverify(&self, user: &User) -> Result<(), LoginFailure> {
        let store = self.store();
        let now = self.now();
        for stored in store.list_providers().await? {
            let provider = &stored.provider;
            let session = match store.get_idp_session(&user.name, &provider.name).await {
                Ok(session) => session,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let age = now
                .duration_since(session.last_checked_at)
                .unwrap_or_default();
            if age < self.config().reverify_after {
                continue;
            }
            match self.oidc.check(provider, &session.refresh_token).await {
                Ok(checked) => {
                    store
                        .mark_idp_session_checked(session.id, checked.refresh_token.as_ref(), now)
                        .await?;
                    if let Some(groups) = checked.groups {
                        self.sync_provider_groups(&provider.name, &user.name, &groups)
                            .await?;
                    }
                }
                Err(OidcError::Refused(why)) => {
                    tracing::info!(user = %user.name, provider = %provider.name, why = %why, "the provider no longer vouches for the user; ending their sessions");
                    store
                        .delete_idp_session(
                            &format!("provider:{}", provider.name),
                            &user.name,
                            &provider.name,
                            now,
                        )
                        .await?;
                    for key in store.list_access_keys(&user.name).await? {
                        if key.kind == KeyKind::Session {
                            store
                                .delete_access_key(
                                    &format!("provider:{}", provider.name),
                                    &key.id,
                                    now,
                                )
                                .await?;
                            self.session_ended(&key.id, &user.name);
                        }
                    }
                    self.changed();
                    return Err(LoginFailure::Refused(format!(
                        "{} no longer accepts your login; run `infra login`",
                        provider.name
                    )));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }
}
