//! The policy file's ownership of what it declares: the bootstrap admin on a first start, and on
//! every start and reload the file's users, groups, members, providers and grants made to match
//! it (what it dropped removed first), recorded as owned so the API refuses to change them.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use infra_authz::policy::{Grant, Policy, Resource, Secret, Subject};
use ring::rand::{SecureRandom as _, SystemRandom};

use super::{BOOTSTRAP_ADMIN, ControlPlane, FILE_ACTOR, SYSTEM_ACTOR};
use crate::passwords;
use crate::store::NewAccessKey;
use crate::store::StoreError;

/// The kinds of objects the policy file owns, as owners in the store's `managed` table.
pub mod owned {
    /// Users.
    pub const USER: &str = "file:user";
    /// Groups.
    pub const GROUP: &str = "file:group";
    /// Group memberships, `group\nuser`.
    pub const MEMBER: &str = "file:member";
    /// Grants, by [`super::grant_key`].
    pub const GRANT: &str = "file:grant";
    /// Identity providers.
    pub const PROVIDER: &str = "file:provider";

    /// The memberships `provider` reported for `user` at their last login or check.
    pub fn idp_groups(provider: &str, user: &str) -> String {
        format!("idp:{provider}:{user}")
    }

    /// The groups `provider` made: the only ones its logins add members to.
    pub fn provider_groups(provider: &str) -> String {
        format!("idp-groups:{provider}")
    }
}

/// The identity key of a grant: subject, role and resource (not the expiry).
pub fn grant_key(grant: &Grant) -> String {
    let (kind, name) = match &grant.subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    };
    format!("{kind}:{name}\n{}\n{}", grant.role, grant.resource)
}

impl ControlPlane {
    /// Takes the policy file's request rules, on-call sources and notification targets.
    fn apply_request_settings(&self, policy: &Policy) {
        self.request_settings
            .store(std::sync::Arc::new(super::FileRequestSettings {
                rules: policy.requests.clone(),
                on_call: policy.on_call.clone(),
                notify: policy.notify.clone(),
            }));
        self.on_call.forget();
        self.notifications.set_targets(policy.notify.clone());
    }

    /// Creates `admin` with `admin` on `infra` on a first start, when the policy file declares
    /// no users. The password comes from the configured file, or is made up and printed once.
    pub(super) async fn bootstrap(&self, policy: &Policy) -> Result<()> {
        if !self.store.created() || !policy.users.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let (password, made_up) = match &self.config.admin_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the admin password file {}", path.display())
                })?;
                (Secret::new(text.trim_end_matches(['\r', '\n'])), false)
            }
            None => (Secret::new(random_password(&self.rng)?), true),
        };
        passwords::check_policy(password.expose(), BOOTSTRAP_ADMIN)
            .map_err(|e| anyhow!("the admin password is refused: {e}"))?;
        self.store
            .create_user(SYSTEM_ACTOR, BOOTSTRAP_ADMIN, now)
            .await?;
        self.store
            .set_password(SYSTEM_ACTOR, BOOTSTRAP_ADMIN, &password, now)
            .await?;
        self.store
            .create_grant(
                SYSTEM_ACTOR,
                &Grant {
                    subject: Subject::User(BOOTSTRAP_ADMIN.to_owned()),
                    role: "admin".to_owned(),
                    resource: Resource::destination(infra_authz::policy::CONTROL_RESOURCE),
                    expires_at: None,
                },
                now,
            )
            .await?;
        if made_up {
            // Printed once, to the terminal that started Infra; never logged.
            eprintln!(
                "infra: created user {BOOTSTRAP_ADMIN:?} with admin access to Infra. Its password, shown only this once:\n\n    {}\n",
                password.expose()
            );
        } else {
            eprintln!(
                "infra: created user {BOOTSTRAP_ADMIN:?} with admin access to Infra, with the password from the admin password file"
            );
        }
        tracing::info!(user = BOOTSTRAP_ADMIN, "bootstrap admin created");
        Ok(())
    }

    /// Makes the store hold what the policy file declares (grants, providers, users, groups and
    /// memberships), and removes what the file declared before but no longer does.
    ///
    /// Removals come first: while a reload is being applied (one store call at a time, not one
    /// transaction), access is never wider than both the old and the new file allow; a reload
    /// that fails half-way leaves less access, never more.
    pub async fn apply_policy_file(&self, policy: &Policy) -> Result<()> {
        let now = self.now();
        let store = &self.store;

        // What the store would refuse is refused before anything changes, so that the previous
        // policy stays in force.
        for user in &policy.users {
            if let Some(password) = &user.password {
                passwords::check_policy(password.expose(), &user.name).map_err(|e| {
                    anyhow!(
                        "the password of user {:?} in the policy file: {e}",
                        user.name
                    )
                })?;
            }
        }

        // What the file declares, as names in the store's `managed` table.
        let users: BTreeSet<String> = policy.users.iter().map(|u| u.name.clone()).collect();
        let groups: BTreeSet<String> = policy.groups.iter().map(|g| g.name.clone()).collect();
        let members: BTreeSet<String> = policy
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(|m| format!("{}\n{m}", g.name)))
            .collect();
        let providers: BTreeSet<String> = policy.providers.iter().map(|p| p.name.clone()).collect();
        let grants: BTreeSet<String> = policy.grants.iter().map(grant_key).collect();

        // What the file declared before and no longer does goes away first.
        for key in store.managed(owned::GRANT).await?.difference(&grants) {
            if let Some(grant) = parse_grant_key(key) {
                match store.revoke_grant(FILE_ACTOR, &grant, now).await {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for key in store.managed(owned::MEMBER).await?.difference(&members) {
            if let Some((group, user)) = key.split_once('\n') {
                match store.remove_member(FILE_ACTOR, group, user, now).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for name in store.managed(owned::GROUP).await?.difference(&groups) {
            match store.delete_group(FILE_ACTOR, name, now).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for name in store.managed(owned::USER).await?.difference(&users) {
            match store.delete_user(FILE_ACTOR, name, now).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for name in store.managed(owned::PROVIDER).await?.difference(&providers) {
            match store.delete_provider(FILE_ACTOR, name, now).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }

        // Users.
        for user in &policy.users {
            match store.create_user(FILE_ACTOR, &user.name, now).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(password) = &user.password
                && !store.password_matches(&user.name, password).await?
            {
                store
                    .set_password(FILE_ACTOR, &user.name, password, now)
                    .await
                    .with_context(|| format!("setting the password of user {:?}", user.name))?;
            }
            if let Some(key) = &user.access_key {
                let new = NewAccessKey {
                    name: "policy-file".to_owned(),
                    kind: crate::store::KeyKind::Api,
                    expires_at: None,
                    inactivity_timeout: None,
                };
                match store
                    .import_access_key(FILE_ACTOR, &user.name, key, &new, now)
                    .await
                {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => {
                        return Err(anyhow::Error::from(e)
                            .context(format!("importing the access key of user {:?}", user.name)));
                    }
                }
            }
        }

        // Groups and members.
        for group in &policy.groups {
            match store.create_group(FILE_ACTOR, &group.name, now).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            for member in &group.members {
                match store.create_user(FILE_ACTOR, member, now).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                store
                    .add_member(FILE_ACTOR, &group.name, member, now)
                    .await?;
            }
        }

        // Providers.
        for provider in &policy.providers {
            match store.get_provider(&provider.name).await {
                Ok(stored) if stored.provider == *provider => {}
                Ok(stored) => {
                    store
                        .update_provider(FILE_ACTOR, provider, stored.revision, now)
                        .await?;
                }
                Err(StoreError::NotFound { .. }) => {
                    store.create_provider(FILE_ACTOR, provider, now).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }

        // Grants.
        for grant in &policy.grants {
            match store
                .find_grant(&grant.subject, &grant.role, &grant.resource)
                .await?
            {
                Some(stored) if stored.grant.expires_at == grant.expires_at => {}
                Some(stored) => {
                    store
                        .update_grant_expiry(
                            FILE_ACTOR,
                            stored.id,
                            stored.revision,
                            grant.expires_at,
                            now,
                        )
                        .await?;
                }
                None => match store.create_grant(FILE_ACTOR, grant, now).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        store.set_managed(owned::USER, &users).await?;
        store.set_managed(owned::GROUP, &groups).await?;
        store.set_managed(owned::MEMBER, &members).await?;
        store.set_managed(owned::PROVIDER, &providers).await?;
        store.set_managed(owned::GRANT, &grants).await?;
        self.apply_request_settings(policy);
        self.changed();
        Ok(())
    }

    /// The answer to a change of `what`, which the policy file owns: change it there.
    pub fn file_owned_message(&self, what: &str) -> String {
        match &self.config.policy_path {
            Some(path) => format!(
                "{what} is declared in the policy file {}; change it there",
                path.display()
            ),
            None => format!("{what} is declared in the policy file; change it there"),
        }
    }
}

/// The grant a [`grant_key`] names (without expiry).
fn parse_grant_key(key: &str) -> Option<Grant> {
    let mut lines = key.split('\n');
    let subject = lines.next()?;
    let role = lines.next()?;
    let resource = lines.next()?;
    let subject = match subject.split_once(':')? {
        ("user", name) => Subject::User(name.to_owned()),
        ("group", name) => Subject::Group(name.to_owned()),
        _ => return None,
    };
    Some(Grant {
        subject,
        role: role.to_owned(),
        resource: resource.parse::<Resource>().ok()?,
        expires_at: None,
    })
}

/// A password of 24 characters from a 62-letter alphabet (about 143 bits).
fn random_password(rng: &SystemRandom) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte)
            .map_err(|_| anyhow!("the system random number generator failed"))?;
        // 248 = 4 * 62: rejecting the rest keeps the choice uniform.
        if byte[0] < 248 {
            out.push(char::from(ALPHABET[usize::from(byte[0] % 62)]));
        }
    }
    Ok(out)
}
