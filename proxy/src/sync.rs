//! Policy snapshots: what a proxy needs from the control plane to decide on its own — the grants
//! of its destination, the group memberships of users, the live sessions (access key ids) that
//! tokens were traded for, and the keys that verify those tokens — with a generation number.
//!
//! A proxy in the control plane's process gets a new snapshot on every change. A proxy in another
//! cluster (`--control-url`) receives them over one long-lived HTTP stream from the control API
//! (a snapshot on connect and on every change, heartbeats between), keeps the last one on disk so
//! it can start while the control plane is down, and fails closed with a clear 503 when it has
//! heard nothing for longer than the staleness bound.
//!
//! Revocation is what snapshots are for: a token carries its session id (`sid`) and the user's
//! groups at issue time, but the proxy believes the snapshot: a token whose session has ended is
//! refused, and the groups come from the snapshot's memberships, not from the token. So removing
//! a grant, a membership, a user or a key takes effect as soon as the snapshot arrives, not when
//! the token expires. Open long-running streams are re-checked too (see [`crate::streams`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use arc_swap::ArcSwap;
use infra_authz::clock::Clock;
use infra_authz::decision::Identity;
use infra_authz::policy::Grant;
use infra_authz::token::Jwks;

pub use infra_api::sync::{Message, Snapshot, WireGrant};
pub use infra_authz::policy::wire::unix;

/// The grants of `snapshot`, well formed ones only (a malformed one is logged and left out: it
/// can only allow less).
pub fn snapshot_grants(snapshot: &Snapshot) -> Vec<Grant> {
    snapshot
        .grants
        .iter()
        .filter_map(|g| match Grant::try_from(g) {
            Ok(grant) => Some(grant),
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed grant in a snapshot");
                None
            }
        })
        .collect()
}

/// The token verification keys of `snapshot`.
pub fn snapshot_keys(snapshot: &Snapshot) -> Result<Jwks> {
    Jwks::from_json(&snapshot.jwks.to_string()).map_err(|e| anyhow!("snapshot keys: {e}"))
}

/// Who may use the control plane's tokens, from the snapshot in force.
#[derive(Debug, Default)]
pub struct Sessions {
    /// The snapshot's generation (milliseconds since the epoch on the control plane's clock).
    generation: u64,
    /// Session id → user.
    by_id: HashMap<String, String>,
    /// Sessions ended lately.
    ended: std::collections::HashSet<String>,
    /// User → the identity to impersonate (with the snapshot's groups), built once.
    identities: HashMap<String, Identity>,
}

impl Sessions {
    /// The view of `snapshot`.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let by_id: HashMap<String, String> = snapshot
            .sessions
            .iter()
            .map(|(id, user)| (id.clone(), user.clone()))
            .collect();
        let mut identities = HashMap::new();
        for user in by_id.values() {
            if identities.contains_key(user) {
                continue;
            }
            let groups = snapshot.members.get(user).cloned().unwrap_or_default();
            identities.insert(user.clone(), Identity::new(user.clone(), groups));
        }
        Self {
            generation: snapshot.generation,
            by_id,
            ended: snapshot.ended.keys().cloned().collect(),
            identities,
        }
    }

    /// The identity to use for a token of `token`'s user traded for `session`, which began at
    /// `session_started` (Unix seconds): with the snapshot's groups when the session is live;
    /// `None` when it has ended. A session that may be newer than the snapshot is taken at the
    /// token's word until a snapshot newer than the session arrives.
    pub fn identity(
        &self,
        session: Option<&str>,
        token: &Identity,
        session_started: u64,
    ) -> Option<Identity> {
        let user = token.user();
        if let Some(owner) = session.and_then(|s| self.by_id.get(s)) {
            return (owner == user)
                .then(|| self.identities.get(user).cloned())
                .flatten();
        }
        if session.is_some_and(|s| self.ended.contains(s)) {
            return None;
        }
        // Whole seconds: the session may have begun any time within the second after it.
        let newer_than_snapshot =
            session_started.saturating_add(1).saturating_mul(1000) > self.generation;
        (session.is_some() && newer_than_snapshot).then(|| token.clone())
    }

    /// The number of live sessions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The snapshot state of one proxy.
#[derive(Debug)]
pub struct SyncState {
    sessions: Arc<ArcSwap<Sessions>>,
    keys: ArcSwap<Option<Jwks>>,
    generation: AtomicU64,
    /// Unix seconds of the last word from the control plane (0: none yet).
    last_contact: AtomicU64,
    /// Fail closed after this long without a word; `None` in the control plane's process.
    staleness: Option<Duration>,
    file: Option<PathBuf>,
}

impl SyncState {
    /// State for a proxy in the control plane's process (never stale).
    pub fn in_process() -> Arc<Self> {
        Arc::new(Self {
            sessions: Arc::new(ArcSwap::from_pointee(Sessions::default())),
            keys: ArcSwap::from_pointee(None),
            generation: AtomicU64::new(0),
            last_contact: AtomicU64::new(0),
            staleness: None,
            file: None,
        })
    }

    /// State for a proxy that syncs from a remote control plane, persisted at `file`.
    pub fn remote(file: PathBuf, staleness: Duration) -> Arc<Self> {
        Arc::new(Self {
            sessions: Arc::new(ArcSwap::from_pointee(Sessions::default())),
            keys: ArcSwap::from_pointee(None),
            generation: AtomicU64::new(0),
            last_contact: AtomicU64::new(0),
            staleness: Some(staleness),
            file: Some(file),
        })
    }

    /// The live sessions, shared with the authenticator.
    pub fn sessions(&self) -> Arc<ArcSwap<Sessions>> {
        Arc::clone(&self.sessions)
    }

    /// The token keys of the snapshot in force.
    pub fn jwks(&self) -> Option<Jwks> {
        self.keys.load().as_ref().clone()
    }

    /// The generation in force (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Notes that the control plane was heard from at `now`.
    pub fn contact(&self, now: SystemTime) {
        self.last_contact.store(unix(now), Ordering::Release);
    }

    /// How long since the control plane was last heard from, if ever.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        match self.last_contact.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_secs(unix(now).saturating_sub(at))),
        }
    }

    /// Why the proxy must not decide now, if it must not: no snapshot yet, or the last word from
    /// the control plane is older than the staleness bound.
    pub fn refuse_reason(&self, now: SystemTime) -> Option<String> {
        let staleness = self.staleness?;
        if self.generation() == 0 {
            return Some(
                "infra-proxy has no policy yet: it has not reached the control plane since it started, and has no saved snapshot".to_owned(),
            );
        }
        let age = self.age(now).unwrap_or(Duration::MAX);
        (age > staleness).then(|| {
            format!(
                "infra-proxy has not heard from the control plane for {} s (the limit is {} s); refusing to decide with stale policy",
                age.as_secs(),
                staleness.as_secs()
            )
        })
    }

    /// Puts `snapshot` in force: grants into `handle`, sessions and keys here. Older or equal
    /// generations are ignored. Returns whether it was applied.
    pub fn apply(&self, snapshot: &Snapshot, handle: &crate::policy::PolicyHandle) -> bool {
        let current = self.generation();
        if snapshot.generation <= current && current != 0 {
            return false;
        }
        match snapshot_keys(snapshot) {
            Ok(keys) => self.keys.store(Arc::new(Some(keys))),
            Err(error) => {
                tracing::error!(%error, "a snapshot's keys do not parse; keeping the old ones");
            }
        }
        self.sessions
            .store(Arc::new(Sessions::from_snapshot(snapshot)));
        handle.replace(&snapshot_grants(snapshot));
        self.generation
            .store(snapshot.generation, Ordering::Release);
        true
    }

    /// Writes `snapshot` to the state file (atomically, mode 0600).
    pub fn persist(&self, snapshot: &Snapshot) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text = serde_json::to_vec(snapshot).context("encoding the snapshot")?;
        write_private(file, &text)
    }

    /// Marks the state file as current (its modification time is the last contact a restart
    /// starts from).
    pub fn touch_file(&self, now: SystemTime) {
        if let Some(file) = &self.file
            && let Ok(handle) = std::fs::File::options().append(true).open(file)
        {
            let _ = handle.set_modified(now);
        }
    }

    /// Reads the state file, if there is one.
    pub fn load(&self) -> Result<Option<Snapshot>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        match std::fs::read(file) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("the saved snapshot {} is not valid", file.display())
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => {
                Err(error).with_context(|| format!("reading the saved snapshot {}", file.display()))
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot")
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// How a remote proxy reaches its control plane.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The control API's URL.
    pub control_url: String,
    /// The access key of a user with `connector` (or `admin`) on `infra`.
    pub access_key: infra_authz::policy::Secret,
    /// Extra CA (PEM) for the control API's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// What to register.
    pub destination: String,
    /// This proxy's URL as users reach it.
    pub public_url: String,
    /// This proxy's serving certificate (PEM), for users' kubeconfigs.
    pub serving_ca_pem: String,
}

/// Keeps a remote proxy's snapshot current: registers the destination, follows the sync stream,
/// applies and saves each snapshot, and reconnects with backoff.
pub fn spawn_remote(
    remote: Remote,
    state: Arc<SyncState>,
    handle: Arc<crate::policy::PolicyHandle>,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    let mut http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .http1_only()
        // A read timeout catches a stream that went silent (heartbeats come every 15 s).
        .read_timeout(Duration::from_secs(45));
    if let Some(pem) = &remote.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("parsing the control CA")? {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build().context("building the control plane client")?;
    {
        // Renew the registration every minute, with what this cluster lacks.
        let (http, remote, handle) = (http.clone(), remote.clone(), Arc::clone(&handle));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_mins(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(error) = register(&http, &remote, &handle).await {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        "renewing the registration failed"
                    );
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            match follow(&http, &remote, &state, &handle, clock.as_ref()).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "sync with the control plane interrupted");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    Ok(())
}

/// Registers (or renews) the destination at the control plane, with the roles its grants name
/// that this cluster lacks.
async fn register(
    http: &reqwest::Client,
    remote: &Remote,
    handle: &crate::policy::PolicyHandle,
) -> Result<()> {
    let base = remote.control_url.trim_end_matches('/');
    let registered = http
        .put(format!("{base}/api/destinations/{}", remote.destination))
        .bearer_auth(remote.access_key.expose())
        .json(&serde_json::json!({
            "url": remote.public_url,
            "ca_pem": remote.serving_ca_pem,
            "version": env!("CARGO_PKG_VERSION"),
            "unknown_roles": handle.unknown_roles(),
            "outside_bindings": handle.outside_bindings(),
        }))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .context("registering with the control plane")?;
    if !registered.status().is_success() {
        bail!(
            "the control plane refused the registration: {} {}",
            registered.status(),
            registered.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn follow(
    http: &reqwest::Client,
    remote: &Remote,
    state: &SyncState,
    handle: &crate::policy::PolicyHandle,
    clock: &dyn Clock,
) -> Result<()> {
    // Registration (where users reach this proxy, its CA, what it reports of its cluster) is
    // renewed every minute; a refusal of it must not keep the proxy from its policy.
    if let Err(error) = register(http, remote, handle).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "registering with the control plane failed; following its policy anyway"
        );
    }
    let base = remote.control_url.trim_end_matches('/');
    let mut response = http
        .get(format!("{base}/api/sync/{}", remote.destination))
        .bearer_auth(remote.access_key.expose())
        .send()
        .await
        .context("opening the sync stream")?;
    if !response.status().is_success() {
        bail!(
            "the control plane refused the sync stream: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading the sync stream")? {
        buffer.extend_from_slice(&chunk);
        if buffer.len() > 64 * 1024 * 1024 {
            bail!("a sync message is larger than 64 MiB");
        }
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            let message: Message =
                serde_json::from_slice(line).context("a sync message does not parse")?;
            let now = clock.now();
            state.contact(now);
            if let Message::Heartbeat(_) = message {
                state.touch_file(now);
            }
            if let Message::Snapshot(snapshot) = message {
                if snapshot.destination != remote.destination {
                    bail!(
                        "the control plane sent the policy of {:?}, not {:?}",
                        snapshot.destination,
                        remote.destination
                    );
                }
                if state.apply(&snapshot, handle) {
                    tracing::info!(
                        generation = snapshot.generation,
                        grants = snapshot.grants.len(),
                        "snapshot from the control plane in force"
                    );
                    if let Err(error) = state.persist(&snapshot) {
                        tracing::warn!(error = format!("{error:#}"), "cannot save the snapshot");
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    fn snapshot(generation: u64) -> Snapshot {
        Snapshot {
            generation,
            destination: "testing".into(),
            issuer: "https://control".into(),
            jwks: serde_json::json!({"keys": []}),
            grants: vec![WireGrant {
                user: None,
                group: Some("Engineering".into()),
                role: "view".into(),
                resource: "testing.web".into(),
                expires_at: Some(2_000_000_000),
            }],
            members: BTreeMap::from([("suzie".to_owned(), vec!["Engineering".to_owned()])]),
            sessions: BTreeMap::from([("k1".to_owned(), "suzie".to_owned())]),
            ended: BTreeMap::from([("k0".to_owned(), "suzie".to_owned())]),
        }
    }

    #[test]
    fn sessions_give_the_snapshots_groups_only_for_live_sessions_of_their_user() {
        // Generation: 1_900_000_000_500 ms.
        let sessions = Sessions::from_snapshot(&snapshot(1_900_000_000_500));
        let suzie = Identity::new("suzie".to_owned(), vec!["Old".to_owned()]);
        let carl = Identity::new("carl".to_owned(), Vec::<String>::new());
        let before = 1_899_999_000;
        let identity = sessions.identity(Some("k1"), &suzie, before).expect("live");
        assert_eq!(
            identity.groups().collect::<Vec<_>>(),
            vec!["Engineering"],
            "groups come from the snapshot"
        );
        assert!(
            sessions.identity(Some("k2"), &suzie, before).is_none(),
            "ended session"
        );
        assert!(
            sessions.identity(Some("k1"), &carl, before).is_none(),
            "someone else's session"
        );
        assert!(
            sessions.identity(None, &suzie, before).is_none(),
            "no session claim"
        );
        // A token from the same second as the snapshot, or later, may be from a session the
        // snapshot does not know yet.
        let same_second = sessions
            .identity(Some("k9"), &suzie, 1_900_000_000)
            .expect("newer session");
        assert_eq!(same_second.groups().collect::<Vec<_>>(), vec!["Old"]);
        assert!(sessions.identity(None, &suzie, 1_900_000_001).is_none());
        assert!(
            sessions
                .identity(Some("k0"), &suzie, 1_900_000_000)
                .is_none(),
            "an ended session stays ended, however new"
        );
    }

    #[test]
    fn grants_round_trip_through_the_wire() {
        let grants = snapshot_grants(&snapshot(1));
        assert_eq!(grants.len(), 1);
        assert_eq!(WireGrant::from(&grants[0]), snapshot(1).grants[0]);
        let text = serde_json::to_string(&Message::Snapshot(Box::new(snapshot(3)))).expect("json");
        let Message::Snapshot(back) = serde_json::from_str(&text).expect("parse") else {
            panic!("not a snapshot");
        };
        assert_eq!(*back, snapshot(3));
    }

    #[test]
    fn a_remote_proxy_refuses_without_a_snapshot_and_when_stale() {
        let dir = tempfile::tempdir().expect("dir");
        let state = SyncState::remote(dir.path().join("s.json"), Duration::from_mins(15));
        let handle =
            crate::policy::PolicyHandle::new("testing", &[], infra_authz::rbac::RoleSet::builtin());
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert!(
            state
                .refuse_reason(now)
                .expect("no snapshot")
                .contains("no policy yet")
        );
        assert!(state.apply(&snapshot(5), &handle));
        assert!(
            !state.apply(&snapshot(4), &handle),
            "older generations are ignored"
        );
        state.contact(now);
        assert_eq!(state.refuse_reason(now + Duration::from_mins(15)), None);
        assert!(
            state
                .refuse_reason(now + Duration::from_mins(16))
                .expect("stale")
                .contains("stale")
        );
        state.persist(&snapshot(5)).expect("persist");
        assert_eq!(state.load().expect("load"), Some(snapshot(5)));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("s.json"))
                .expect("stat")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(SyncState::in_process().refuse_reason(now).is_none());
    }
}
