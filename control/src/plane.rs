//! The control plane: the store, the token signer with its key rotation, the bootstrap admin, and
//! the policy file's ownership of what it declares. The HTTP API ([`super::api`]) is a thin layer
//! over this.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use infra_authz::clock::Clock;
use infra_authz::policy::{Grant, Policy, Resource, Secret, Subject};
use infra_authz::token::{
    IssuedToken, Issuer, Jwks, SigningAlgorithm, SigningKey as TokenKey, TokenRequest,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::watch;

use super::crypto::SecretBytes;
use super::oidc::OidcLogins;
use super::store::{NewAccessKey, NewSigningKey, StoreError, User};
use super::{Store, passwords};

/// The actor name the policy file's changes are recorded under.
pub const FILE_ACTOR: &str = "policy-file";
/// The actor name of the control plane's own changes.
pub const SYSTEM_ACTOR: &str = "infra";
/// The name of the user a first start creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// How the control plane behaves.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The issuer name its tokens carry (`iss`): the control API's URL.
    pub issuer: String,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
    /// How often the signing key is replaced.
    pub rotate_every: Duration,
    /// How long a new key is published before it signs, so every verifier knows it first.
    pub publish_lead: Duration,
    /// How old a provider user's last check may be before a token is issued without asking the
    /// provider again.
    pub reverify_after: Duration,
    /// The bootstrap admin's password, read from this file instead of made up.
    pub admin_password_file: Option<PathBuf>,
    /// Where the policy file is, for messages about what it owns.
    pub policy_path: Option<PathBuf>,
    /// Redirect URIs (exact) that OIDC logins may use besides loopback ones.
    pub redirect_uris: Vec<String>,
    /// Extra CA certificates (PEM) to trust for identity providers, besides the system roots.
    pub provider_ca_file: Option<PathBuf>,
}

impl ControlConfig {
    /// The defaults for an issuer URL.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            token_ttl: Duration::from_mins(5),
            rotate_every: Duration::from_hours(24),
            publish_lead: Duration::from_mins(10),
            reverify_after: Duration::from_mins(15),
            admin_password_file: None,
            policy_path: None,
            redirect_uris: Vec::new(),
            provider_ca_file: None,
        }
    }
}

/// The keys in force: the one that signs, and every one that is published.
#[derive(Debug)]
struct Keys {
    issuer: Issuer,
    jwks: Jwks,
    jwks_json: String,
}

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
}

/// What a control replica tells the others when something changed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Announcement {
    /// The replica that made the change.
    from: String,
    /// Sessions that ended, (id, user).
    #[serde(default)]
    ended: Vec<(String, String)>,
}

/// The identity key of a grant: subject, role and resource (not the expiry).
pub fn grant_key(grant: &Grant) -> String {
    let (kind, name) = match &grant.subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    };
    format!("{kind}:{name}\n{}\n{}", grant.role, grant.resource)
}

/// The control plane.
#[derive(Debug)]
pub struct ControlPlane {
    store: Store,
    /// What snapshots of every destination share, as of one change (see `shared_view`).
    shared: tokio::sync::Mutex<Option<Arc<SharedView>>>,
    config: ControlConfig,
    keys: ArcSwap<Keys>,
    changes: watch::Sender<u64>,
    generation: std::sync::atomic::AtomicU64,
    /// Sessions ended lately (id → user, when), kept until every token traded for them has
    /// expired, so proxies refuse those tokens even when the session began moments before.
    ended: std::sync::Mutex<std::collections::HashMap<String, (String, SystemTime)>>,
    /// This replica's name in announcements to the others.
    replica: String,
    /// What each destination's proxy last reported: roles its grants name that its cluster does
    /// not have.
    unknown_roles: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    /// Logins in flight at identity providers.
    pub oidc: OidcLogins,
}

/// How old the shared part of snapshots may get with no change: access keys lapse by time
/// (expiry, inactivity since their last use) without a change notice.
const SHARED_VIEW_MAX_AGE: Duration = Duration::from_secs(5);

/// Memberships and access keys as of one change.
#[derive(Debug)]
struct SharedView {
    change: u64,
    built: std::time::Instant,
    members: std::collections::BTreeMap<String, Vec<String>>,
    keys: Vec<super::store::AccessKey>,
}

impl ControlPlane {
    /// Starts the control plane on an opened store: the first signing key, the bootstrap admin,
    /// and the policy file's objects.
    pub async fn start(
        store: Store,
        config: ControlConfig,
        policy: &Policy,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        let now = clock.now();
        let keys = load_keys(&store, &config, now, true).await?;
        let (changes, _) = watch::channel(0);
        let oidc = OidcLogins::new(&config)?;
        let plane = Arc::new(Self {
            store,
            shared: tokio::sync::Mutex::new(None),
            config,
            keys: ArcSwap::from_pointee(keys),
            changes,
            generation: std::sync::atomic::AtomicU64::new(0),
            ended: std::sync::Mutex::new(std::collections::HashMap::new()),
            replica: uuid::Uuid::new_v4().to_string(),
            unknown_roles: std::sync::Mutex::new(std::collections::HashMap::new()),
            clock,
            rng: SystemRandom::new(),
            oidc,
        });
        plane.apply_policy_file(policy).await?;
        plane.bootstrap(policy).await?;
        plane.spawn_replica_listener();
        Ok(plane)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The issuer name (`iss`) of its tokens.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The published public keys.
    pub fn jwks(&self) -> Jwks {
        self.keys.load().jwks.clone()
    }

    /// The published public keys as JSON.
    pub fn jwks_json(&self) -> String {
        self.keys.load().jwks_json.clone()
    }

    /// A receiver that sees a new number whenever grants, memberships or users change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells subscribers, here and on the other control replicas, that policy changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
        self.announce(&Announcement {
            from: self.replica.clone(),
            ended: Vec::new(),
        });
    }

    /// Tells the other control replicas (PostgreSQL) about a change.
    fn announce(&self, announcement: &Announcement) {
        if self.store.database_kind() != "postgres" {
            return;
        }
        let Ok(payload) = serde_json::to_string(announcement) else {
            return;
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.notify_change(&payload).await {
                tracing::warn!(%error, "cannot tell the other control replicas about a change");
            }
        });
    }

    /// Follows the other control replicas' announcements (PostgreSQL): their changes reach this
    /// replica's proxies and sync streams as if made here.
    pub fn spawn_replica_listener(self: &Arc<Self>) {
        if self.store.database_kind() != "postgres" {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let store = this.store.clone();
            let result = store
                .listen_changes(|payload| {
                    let announcement: Option<Announcement> = serde_json::from_str(payload).ok();
                    if let Some(announcement) = &announcement {
                        if announcement.from == this.replica {
                            return;
                        }
                        let now = this.now();
                        let mut ended = this
                            .ended
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (id, user) in &announcement.ended {
                            ended.insert(id.clone(), (user.clone(), now));
                        }
                    }
                    this.changes.send_modify(|n| *n += 1);
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "cannot follow the other control replicas");
            }
        });
    }

    /// Records the roles `destination`'s proxy says its grants name but its cluster lacks.
    pub fn report_unknown_roles(&self, destination: &str, roles: Vec<String>) {
        let mut known = self
            .unknown_roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if roles.is_empty() {
            known.remove(destination);
        } else {
            known.insert(destination.to_owned(), roles);
        }
    }

    /// The roles `destination`'s proxy last reported missing.
    pub fn unknown_roles(&self, destination: &str) -> Vec<String> {
        self.unknown_roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .cloned()
            .unwrap_or_default()
    }

    /// Notes that the session `id` of `user` has ended (logout, a deleted key or user, a
    /// provider's refusal). Call before or after deleting it; then [`Self::changed`].
    pub fn session_ended(&self, id: &str, user: &str) {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), (user.to_owned(), self.now()));
        self.announce(&Announcement {
            from: self.replica.clone(),
            ended: vec![(id.to_owned(), user.to_owned())],
        });
    }

    /// The policy snapshot of `destination` now: its grants, every user's groups, the live
    /// sessions, and the token keys.
    pub async fn snapshot(&self, destination: &str) -> Result<infra_api::sync::Snapshot> {
        use std::collections::BTreeMap;
        let now = self.now();
        let grants = self
            .store
            .list_grants_on(destination, now)
            .await?
            .iter()
            .map(|stored| &stored.grant)
            .filter(|g| !g.resource.is_control())
            .map(infra_api::sync::WireGrant::from)
            .collect();
        let shared = self.shared_view().await?;
        let members: BTreeMap<String, Vec<String>> = shared.members.clone();
        let sessions = shared
            .keys
            .iter()
            .filter(|k| k.lapsed(now).is_none())
            .map(|k| (k.id.clone(), k.user.clone()))
            .collect();
        let keep = self.config.token_ttl + Duration::from_mins(2);
        let ended = {
            let mut ended = self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ended.retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < keep);
            ended
                .iter()
                .map(|(id, (user, _))| (id.clone(), user.clone()))
                .collect()
        };
        let jwks = serde_json::from_str(&self.jwks_json()).context("the published keys")?;
        let millis = u64::try_from(
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let generation = self
            .generation
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |last| Some(millis.max(last + 1)),
            )
            .map_or(millis, |last| millis.max(last + 1));
        Ok(infra_api::sync::Snapshot {
            generation,
            destination: destination.to_owned(),
            issuer: self.config.issuer.clone(),
            jwks,
            grants,
            members,
            sessions,
            ended,
        })
    }

    /// The part of every destination's snapshot that does not depend on the destination, read
    /// once per change (and at most [`SHARED_VIEW_MAX_AGE`] old, for keys' last use), however
    /// many proxies are streaming: each change used to read every membership and access key
    /// once per connected proxy.
    async fn shared_view(&self) -> Result<Arc<SharedView>, StoreError> {
        // The change counter is read before the store: a view built after reading change `n`
        // holds at least every write that change `n` announced.
        let change = *self.changes.borrow();
        let mut cached = self.shared.lock().await;
        if let Some(view) = cached.as_ref()
            && view.change == change
            && view.built.elapsed() < SHARED_VIEW_MAX_AGE
        {
            return Ok(Arc::clone(view));
        }
        let mut members: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for (user, group) in self.store.memberships().await? {
            members.entry(user).or_default().push(group);
        }
        let view = Arc::new(SharedView {
            change,
            built: std::time::Instant::now(),
            members,
            keys: self.store.all_access_keys().await?,
        });
        *cached = Some(Arc::clone(&view));
        Ok(view)
    }

    /// The grants in force at `now` (the file's and the API's).
    pub async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .store
            .list_grants(self.now())
            .await?
            .into_iter()
            .map(|g| g.grant)
            .collect())
    }

    /// Issues a token for `user` at `destination`, with the user's current groups, traded for
    /// the session (access key) `session`.
    pub async fn issue_token(
        &self,
        user: &User,
        destination: &str,
        session: Option<&super::store::AccessKey>,
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
    pub async fn new_session(&self, user: &str) -> Result<(super::store::AccessKey, Secret)> {
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
                match this.store.purge_expired(this.now()).await {
                    Ok(purged) if purged.grants > 0 || purged.access_keys > 0 => this.changed(),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "purging expired grants and keys failed");
                    }
                }
            }
        });
    }

    /// Creates `admin` with `admin` on `infra` on a first start, when the policy file declares
    /// no users. The password comes from the configured file, or is made up and printed once.
    async fn bootstrap(&self, policy: &Policy) -> Result<()> {
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
                    kind: super::store::KeyKind::Api,
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

async fn add_key(store: &Store, now: SystemTime) -> Result<()> {
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
async fn load_keys(
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
