//! Logging in and staying logged in: the three ways in (password, access key, OpenID Connect),
//! the groups a provider vouches for, and re-verification with the provider when its last word
//! is old. The HTTP layer only reads requests and writes answers around these.

use std::collections::BTreeSet;
use std::time::Duration;

use infra_api::LoginRequest;
use infra_authz::policy::Secret;

use crate::clients::ClientAddr;
use crate::oidc::{self, OidcError};
use crate::plane::{ControlPlane, owned};
use crate::store::{Binding, KeyError, LoginError, StoreError, User};
use infra_authz::policy::names::{MAX_NAME_BYTES, MAX_PASSWORD_BYTES};

/// Why a login (or a session's re-verification) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginFailure {
    /// The name, password or key is wrong (one answer for all).
    #[error("{0}")]
    InvalidCredentials(String),
    /// Too many failed logins for this name from where the client is.
    #[error("too many failed logins for this user")]
    Locked {
        /// When the lock lifts.
        retry_after: Duration,
    },
    /// A name or password longer than any Infra keeps: refused before any work.
    #[error("{0}")]
    TooLong(String),
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
    /// The user `request`, sent by `client`, proves to be.
    pub async fn log_in(
        &self,
        request: LoginRequest,
        client: &ClientAddr,
    ) -> Result<User, LoginFailure> {
        let now = self.now();
        let store = self.store();
        match request {
            LoginRequest::Password { name, password } => {
                // Bounded before anything is counted, hashed or stored.
                if name.len() > MAX_NAME_BYTES {
                    return Err(LoginFailure::TooLong(format!(
                        "a user name is at most {MAX_NAME_BYTES} bytes"
                    )));
                }
                if password.len() > MAX_PASSWORD_BYTES {
                    return Err(LoginFailure::TooLong(format!(
                        "a password is at most {MAX_PASSWORD_BYTES} bytes"
                    )));
                }
                match store
                    .login_with_password(&name, &Secret::new(password), &client.key, now)
                    .await
                {
                    Ok(user) => Ok(user),
                    Err(LoginError::InvalidCredentials) => Err(LoginFailure::InvalidCredentials(
                        LoginError::InvalidCredentials.to_string(),
                    )),
                    Err(LoginError::Locked { until }) => Err(LoginFailure::Locked {
                        retry_after: until.duration_since(now).unwrap_or_default(),
                    }),
                    Err(LoginError::Store(e)) => Err(e.into()),
                }
            }
            LoginRequest::AccessKey(key) => {
                match store.authenticate_access_key(&Secret::new(key), now).await {
                    Ok((key, user)) => {
                        store
                            .append_audit(
                                &user.name,
                                "user.login",
                                &format!("user {:?}", user.name),
                                &format!("access key {} from {:?}", key.id, client.key),
                                now,
                            )
                            .await?;
                        Ok(user)
                    }
                    Err(KeyError::Store(e)) => Err(e.into()),
                    Err(other) => {
                        store
                            .append_audit(
                                "anonymous",
                                "user.login.failed",
                                "access key",
                                &format!("{other} from {:?}", client.key),
                                now,
                            )
                            .await?;
                        Err(LoginFailure::InvalidCredentials(other.to_string()))
                    }
                }
            }
            LoginRequest::Oidc {
                state,
                code,
                code_verifier,
            } => {
                let user = self.finish_oidc_login(&state, &code, &code_verifier).await;
                let (action, target, detail) = match &user {
                    Ok(user) => (
                        "user.login",
                        format!("user {:?}", user.name),
                        format!("oidc from {:?}", client.key),
                    ),
                    Err(error) => (
                        "user.login.failed",
                        "oidc".to_owned(),
                        format!("{error} from {:?}", client.key),
                    ),
                };
                let actor = user.as_ref().map_or("anonymous", |u| u.name.as_str());
                store
                    .append_audit(actor, action, &target, &detail, now)
                    .await?;
                user
            }
        }
    }

    /// Starts a login at `provider`: where to send the browser, with the state kept in the
    /// store (so any replica can finish it).
    pub async fn start_oidc_login(
        &self,
        provider: &str,
        redirect_uri: &str,
        code_challenge: &str,
        client: &ClientAddr,
    ) -> Result<OidcRedirect, LoginFailure> {
        let provider = self.store().get_provider(provider).await?.provider;
        let now = self.now();
        let (authorize_url, state, pending) = self
            .oidc
            .start(&provider, redirect_uri, code_challenge, now)
            .await?;
        if !self
            .store()
            .put_oidc_login(
                &oidc::state_key(&state),
                &pending,
                &client.key,
                now,
                oidc::MAX_PENDING,
                oidc::MAX_PENDING_PER_CLIENT,
            )
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
        // Who logged in is (provider, subject); the email only names a user at the first login,
        // and never one of another origin (see `Store::bind_identity`).
        let user = match store.user_of_identity(&name, &vouched.subject).await? {
            Some(user) => user,
            None => match store
                .bind_identity(&name, &vouched.subject, &vouched.email, now)
                .await?
            {
                Binding::Bound(user) => user,
                Binding::Refused { user, why } => {
                    tracing::warn!(provider = %name, subject = %vouched.subject, user = %user, why = %why, "a provider login named a user of another origin; refused");
                    return Err(LoginFailure::Refused(format!(
                        "{name} says you are {user:?}, but that user {why} in Infra; an admin must link the two first (infra users link {user} --provider {name} --subject {})",
                        vouched.subject
                    )));
                }
            },
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
        let theirs = owned::provider_groups(provider);
        let mut after = BTreeSet::new();
        for group in groups {
            if infra_authz::policy::validate_subject_name(group).is_err() {
                tracing::warn!(provider, group = %group, "ignoring a group name Infra does not accept");
                continue;
            }
            // A provider's groups are its own: it adds members to the groups it made, never to
            // a group of the same name made in Infra or by another provider.
            match store.create_group(&actor, group, now).await {
                Ok(_) => store.add_managed(&theirs, group).await?,
                Err(StoreError::AlreadyExists { .. }) => {
                    if !store.is_managed(&theirs, group).await? {
                        tracing::warn!(provider, group = %group, user, "the provider reports a group of the same name as one it did not make; not joining it");
                        continue;
                    }
                }
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
                    // Every credential the identity holds ends with it: its sessions, and the
                    // access keys it made for itself (a key would otherwise outlive the refusal
                    // and trade for tokens); their tokens and open streams end on every proxy
                    // with the sessions.
                    for key in store.list_access_keys(&user.name).await? {
                        store
                            .delete_access_key(&format!("provider:{}", provider.name), &key.id, now)
                            .await?;
                        self.session_ended(&key.id, &user.name);
                    }
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
