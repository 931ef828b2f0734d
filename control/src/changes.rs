//! The changes the API asks of the plane. Each one refuses what the policy file owns, makes the
//! change in the store, ends the sessions it ends, and publishes it to the proxies — so that no
//! caller can forget a step.

use std::time::{Duration, SystemTime};

use infra_api::Source;
use infra_authz::policy::{CONTROL_RESOURCE, CONTROL_ROLES, Grant, Provider, Secret};

use crate::plane::{ControlPlane, grant_key, owned};
use crate::store::{
    AccessKey, Destination, KeyKind, NewAccessKey, NewDestination, StoreError, StoredGrant,
    StoredProvider, User,
};

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The policy file owns what the change would touch.
    #[error("{0}")]
    FileOwned(String),
    /// The caller may not make the change (a review of one's own request, a request no rule
    /// covers).
    #[error("{0}")]
    Forbidden(String),
    /// An access request owns what the change would touch.
    #[error("{0}")]
    RequestOwned(String),
    /// The change makes no sense (a past expiry, a role that means nothing there, yourself).
    #[error("{0}")]
    Invalid(String),
    /// What the change names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else of the plane's failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

type Changed<T = ()> = Result<T, ChangeError>;

impl ControlPlane {
    /// Who owns the object `kind`/`name`: the policy file or the API.
    pub async fn source_of(&self, kind: &str, name: &str) -> Result<Source, StoreError> {
        Ok(if self.store().is_managed(kind, name).await? {
            Source::File
        } else {
            Source::Api
        })
    }

    /// Refuses a change to what the policy file owns, naming the file.
    async fn refuse_file_owned(&self, kind: &str, name: &str, what: &str) -> Changed {
        if self.store().is_managed(kind, name).await? {
            return Err(ChangeError::FileOwned(self.file_owned_message(what)));
        }
        Ok(())
    }

    /// Makes a user, with a local password if one is given (checked against the password
    /// policy before anything is stored).
    pub async fn create_user(
        &self,
        actor: &str,
        name: &str,
        password: Option<String>,
    ) -> Changed<User> {
        let now = self.now();
        let store = self.store();
        if let Some(password) = &password {
            crate::passwords::check_policy(password, name)
                .map_err(|e| ChangeError::Invalid(e.to_string()))?;
        }
        let user = store.create_user(actor, name, now).await?;
        let user = match password {
            Some(password) => {
                store
                    .set_password(actor, name, &Secret::new(password), now)
                    .await?;
                store.get_user(name).await?
            }
            None => user,
        };
        // A new user is in no group and has no grant: no proxy needs to hear of it.
        Ok(user)
    }

    /// Removes a user (not oneself) and ends every session of theirs.
    pub async fn delete_user(&self, actor: &str, name: &str) -> Changed {
        self.refuse_file_owned(owned::USER, name, &format!("user {name:?}"))
            .await?;
        if actor == name {
            return Err(ChangeError::Invalid(
                "you cannot delete yourself; ask another admin".into(),
            ));
        }
        let keys = self.store().list_access_keys(name).await?;
        self.store().delete_user(actor, name, self.now()).await?;
        for key in keys {
            self.session_ended(&key.id, name);
        }
        self.changed();
        Ok(())
    }

    /// Sets a user's local password.
    pub async fn set_password(&self, actor: &str, name: &str, password: String) -> Changed {
        self.refuse_file_owned(owned::USER, name, &format!("user {name:?}"))
            .await?;
        self.store()
            .set_password(actor, name, &Secret::new(password), self.now())
            .await?;
        Ok(())
    }

    /// Lifts every login lockout of `name` (every address starts over), audited.
    pub async fn unlock_user(&self, actor: &str, name: &str) -> Changed {
        self.store().clear_login_failures(name).await?;
        self.store()
            .append_audit(
                actor,
                "user.unlock",
                &format!("user {name:?}"),
                "",
                self.now(),
            )
            .await?;
        Ok(())
    }

    /// Links `provider`'s `subject` to the user `name`: its logins are that user from now on.
    pub async fn link_identity(
        &self,
        actor: &str,
        name: &str,
        provider: &str,
        subject: &str,
    ) -> Changed {
        self.store().get_provider(provider).await?;
        if subject.is_empty() || subject.len() > 255 {
            return Err(ChangeError::Invalid(
                "subject must be 1 to 255 bytes (the provider's `sub`)".into(),
            ));
        }
        self.store()
            .link_identity(actor, name, provider, subject, self.now())
            .await?;
        Ok(())
    }

    /// Makes a group.
    pub async fn create_group(&self, actor: &str, name: &str) -> Changed {
        self.store().create_group(actor, name, self.now()).await?;
        Ok(())
    }

    /// Removes a group.
    pub async fn delete_group(&self, actor: &str, name: &str) -> Changed {
        self.refuse_file_owned(owned::GROUP, name, &format!("group {name:?}"))
            .await?;
        self.store().delete_group(actor, name, self.now()).await?;
        self.changed();
        Ok(())
    }

    /// Adds `user` (made if new) to `group`.
    pub async fn add_member(&self, actor: &str, group: &str, user: &str) -> Changed {
        self.refuse_file_owned(
            owned::MEMBER,
            &format!("{group}\n{user}"),
            &format!("{user:?} in group {group:?}"),
        )
        .await?;
        let now = self.now();
        let store = self.store();
        store.get_group(group).await?;
        match store.create_user(actor, user, now).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        store.add_member(actor, group, user, now).await?;
        self.member_changed(user, group);
        Ok(())
    }

    /// Takes `user` out of `group`.
    pub async fn remove_member(&self, actor: &str, group: &str, user: &str) -> Changed {
        self.refuse_file_owned(
            owned::MEMBER,
            &format!("{group}\n{user}"),
            &format!("{user:?} in group {group:?}"),
        )
        .await?;
        if !self
            .store()
            .remove_member(actor, group, user, self.now())
            .await?
        {
            return Err(ChangeError::NotFound(format!(
                "{user:?} is not a member of group {group:?}"
            )));
        }
        self.member_changed(user, group);
        Ok(())
    }

    /// Makes a grant (not one that has lapsed, nor one whose role means nothing on `infra`).
    pub async fn create_grant(&self, actor: &str, grant: &Grant) -> Changed<StoredGrant> {
        let now = self.now();
        if grant.expires_at.is_some_and(|at| at <= now) {
            return Err(ChangeError::Invalid("expires_at is in the past".into()));
        }
        if grant.resource.is_control() && !CONTROL_ROLES.contains(&grant.role.as_str()) {
            return Err(ChangeError::Invalid(format!(
                "role {:?} means nothing on {CONTROL_RESOURCE:?}; use one of {}",
                grant.role,
                CONTROL_ROLES.join(", ")
            )));
        }
        let stored = self.store().create_grant(actor, grant, now).await?;
        self.grants_changed(&grant.resource.destination);
        Ok(stored)
    }

    /// The grant `id`, when the API may change it (not the policy file's).
    async fn changeable_grant(&self, id: i64) -> Changed<StoredGrant> {
        let stored = self.store().get_grant(id).await?;
        if let Some(request) = self.store().request_of_grant(id).await? {
            return Err(ChangeError::RequestOwned(format!(
                "grant {id} belongs to access request {request}; it ends with the request: `infra requests revoke {request}`"
            )));
        }
        self.refuse_file_owned(
            owned::GRANT,
            &grant_key(&stored.grant),
            &format!("grant {id}"),
        )
        .await?;
        Ok(stored)
    }

    /// Changes when grant `id` lapses, if it is still at `revision`.
    pub async fn update_grant_expiry(
        &self,
        actor: &str,
        id: i64,
        revision: i64,
        expires_at: Option<SystemTime>,
    ) -> Changed<StoredGrant> {
        self.changeable_grant(id).await?;
        let updated = self
            .store()
            .update_grant_expiry(actor, id, revision, expires_at, self.now())
            .await?;
        self.grants_changed(&updated.grant.resource.destination);
        Ok(updated)
    }

    /// Removes grant `id`.
    pub async fn delete_grant(&self, actor: &str, id: i64) -> Changed {
        let stored = self.changeable_grant(id).await?;
        self.store()
            .delete_grant(actor, id, None, self.now())
            .await?;
        self.grants_changed(&stored.grant.resource.destination);
        Ok(())
    }

    /// Makes an API access key for `user` (not one that has lapsed).
    pub async fn create_api_key(
        &self,
        actor: &str,
        user: &str,
        name: String,
        expires_at: Option<SystemTime>,
        inactivity_timeout: Option<Duration>,
    ) -> Changed<(AccessKey, Secret)> {
        let now = self.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(ChangeError::Invalid("expires_at is in the past".into()));
        }
        infra_authz::policy::names::validate_name(&name)
            .map_err(|why| ChangeError::Invalid(format!("access key name: {why}")))?;
        let made = self
            .store()
            .create_access_key(
                actor,
                user,
                &NewAccessKey {
                    name,
                    kind: KeyKind::Api,
                    expires_at,
                    inactivity_timeout,
                },
                now,
            )
            .await?;
        // A new key is like a login: proxies take its tokens without being told.
        Ok(made)
    }

    /// Whose access key `id` is, if it exists.
    pub async fn access_key_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .store()
            .all_access_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.user))
    }

    /// Removes access key `id` of `owner`, ending its session.
    pub async fn delete_access_key(&self, actor: &str, id: &str, owner: &str) -> Changed {
        self.store()
            .delete_access_key(actor, id, self.now())
            .await?;
        self.session_ended(id, owner);
        Ok(())
    }

    /// Adds an identity provider.
    pub async fn create_provider(
        &self,
        actor: &str,
        provider: &Provider,
    ) -> Changed<StoredProvider> {
        Ok(self
            .store()
            .create_provider(actor, provider, self.now())
            .await?)
    }

    /// Changes an identity provider, if it is still at `revision`.
    pub async fn update_provider(
        &self,
        actor: &str,
        provider: &Provider,
        revision: i64,
    ) -> Changed<StoredProvider> {
        let name = &provider.name;
        self.refuse_file_owned(owned::PROVIDER, name, &format!("provider {name:?}"))
            .await?;
        Ok(self
            .store()
            .update_provider(actor, provider, revision, self.now())
            .await?)
    }

    /// Removes an identity provider.
    pub async fn delete_provider(&self, actor: &str, name: &str) -> Changed {
        self.refuse_file_owned(owned::PROVIDER, name, &format!("provider {name:?}"))
            .await?;
        self.store()
            .delete_provider(actor, name, self.now())
            .await?;
        Ok(())
    }

    /// Registers (or heartbeats) a destination, with the roles its cluster lacks.
    pub async fn put_destination(
        &self,
        actor: &str,
        destination: &NewDestination,
        report: crate::plane::ClusterReport,
    ) -> Changed<Destination> {
        self.report_cluster(&destination.name, report);
        Ok(self
            .store()
            .put_destination(actor, destination, self.now())
            .await?)
    }

    /// Removes a destination.
    pub async fn delete_destination(&self, actor: &str, name: &str) -> Changed {
        self.store()
            .delete_destination(actor, name, self.now())
            .await?;
        Ok(())
    }
}
