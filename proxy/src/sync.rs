//! Policy snapshots: what a proxy needs from the control plane to decide on its own — the grants
//! of its destination, the members of the groups those grants name, the sessions that ended
//! lately, and the keys that verify the control plane's tokens.
//!
//! A proxy in the control plane's process builds a new snapshot on every change. A proxy in
//! another cluster (`--control-url`) follows one long-lived HTTP stream from the control API
//! (sync protocol [`PROTOCOL`]): a snapshot on connect, then a delta for each change that concerns
//! its destination, each naming the `seq` it follows — a proxy that sees another (a gap) refuses
//! to decide until it has started again from a new snapshot. It keeps what it holds on disk so it
//! can start while the control plane is down, and fails closed with a clear 503 when it has heard
//! nothing for longer than the staleness bound.
//!
//! Revocation is what the stream is for: a token carries its session id (`sid`) and the user's
//! groups at issue time, but the proxy believes the control plane: a token whose session has
//! ended is refused, and the groups come from the snapshot's memberships, not from the token. So
//! removing a grant, a membership, a user or a key takes effect as soon as its delta arrives, not
//! when the token expires. Open long-running streams are re-checked too (see [`crate::streams`]).
//! A new session needs no message: its tokens are signed by the control plane and name it, and
//! the proxy takes them unless it heard that the session ended.

use std::collections::{HashMap, HashSet};
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

pub use infra_api::sync::{Change, Delta, Message, PROTOCOL, Snapshot, WireGrant};
pub use stream::StreamReader;
use stream::follow;

mod stream;
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

/// How long a proxy remembers a session it heard had ended, across snapshots (longer than a token
/// of the control plane lives by default; the control plane keeps them as long as its tokens
/// live, in its store).
pub const ENDED_RETENTION: Duration = Duration::from_mins(30);

/// Who may use the control plane's tokens, from the policy in force.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Sessions ended lately.
    ended: Arc<HashSet<String>>,
    /// User → the identity to impersonate (with the groups that matter here), built once.
    identities: Arc<HashMap<String, Identity>>,
}

impl Sessions {
    /// The view of `snapshot`.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            ended: Arc::new(snapshot.ended.keys().cloned().collect()),
            identities: Arc::new(identities(&snapshot.members)),
        }
    }

    /// The identity to use for a token of `token`'s user traded for `session`: with the groups
    /// the control plane says the user is in (among those this destination's grants name), or
    /// `None` when the token names no session or one that has ended. A session the proxy never
    /// heard of is live: the control plane signed a token for it, and would have said had it
    /// ended.
    pub fn identity(&self, session: Option<&str>, token: &Identity) -> Option<Identity> {
        let session = session?;
        if self.ended.contains(session) {
            return None;
        }
        let user = token.user();
        Some(
            self.identities
                .get(user)
                .cloned()
                .unwrap_or_else(|| Identity::new(user.to_owned(), Vec::<String>::new())),
        )
    }

    /// The number of sessions known to have ended.
    pub fn ended(&self) -> usize {
        self.ended.len()
    }
}

fn identities(
    members: &std::collections::BTreeMap<String, Vec<String>>,
) -> HashMap<String, Identity> {
    members
        .iter()
        .map(|(user, groups)| (user.clone(), Identity::new(user.clone(), groups.clone())))
        .collect()
}

/// Why a message of the sync stream was not applied: the proxy missed something, and must start
/// again from a snapshot (it refuses to decide until then).
#[derive(Debug, thiserror::Error)]
#[error(
    "the sync stream is at {got} but this proxy is at {held}: a change was missed; starting again from a snapshot"
)]
pub struct Gap {
    /// The `seq` the proxy holds.
    pub held: u64,
    /// The `seq` the message follows.
    pub got: u64,
}

/// The policy a remote proxy holds: the last snapshot with every delta since applied.
#[derive(Debug, Default)]
struct Held {
    snapshot: Option<Snapshot>,
    /// When this proxy first heard of each ended session (kept across snapshots for
    /// [`ENDED_RETENTION`]).
    heard: HashMap<String, SystemTime>,
    /// Changed since last saved.
    dirty: bool,
    saved_at: Option<std::time::Instant>,
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
    held: std::sync::Mutex<Held>,
    /// A change was missed: refuse to decide until a new snapshot is in force.
    gap: std::sync::atomic::AtomicBool,
}

impl SyncState {
    fn new(staleness: Option<Duration>, file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            sessions: Arc::new(ArcSwap::from_pointee(Sessions::default())),
            keys: ArcSwap::from_pointee(None),
            generation: AtomicU64::new(0),
            last_contact: AtomicU64::new(0),
            staleness,
            file,
            held: std::sync::Mutex::new(Held::default()),
            gap: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// State for a proxy in the control plane's process (never stale).
    pub fn in_process() -> Arc<Self> {
        Self::new(None, None)
    }

    /// State for a proxy that syncs from a remote control plane, persisted at `file`.
    pub fn remote(file: PathBuf, staleness: Duration) -> Arc<Self> {
        Self::new(Some(staleness), Some(file))
    }

    /// The sessions view, shared with the authenticator.
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

    /// The `seq` of the last message of the sync stream in force (0: none).
    pub fn seq(&self) -> u64 {
        self.lock_held().snapshot.as_ref().map_or(0, |s| s.seq)
    }

    /// Notes a missed change: the proxy refuses to decide until the next snapshot.
    pub(crate) fn mark_gap(&self) {
        self.gap.store(true, Ordering::Release);
    }

    /// Whether a missed change keeps the proxy from deciding until the next snapshot.
    pub fn has_gap(&self) -> bool {
        self.gap.load(Ordering::Acquire)
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

    /// Why the proxy must not decide now, if it must not: no snapshot yet, a missed change, or
    /// the last word from the control plane is older than the staleness bound.
    pub fn refuse_reason(&self, now: SystemTime) -> Option<String> {
        let staleness = self.staleness?;
        if self.generation() == 0 {
            return Some(
                "infra-proxy has no policy yet: it has not reached the control plane since it started, and has no saved snapshot".to_owned(),
            );
        }
        if self.has_gap() {
            return Some(
                "infra-proxy missed a change from the control plane and is fetching its policy again".to_owned(),
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

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `snapshot` in force: grants into `handle`, sessions and keys here. Older or equal
    /// generations are ignored (the proxy in the control plane's process, a saved snapshot).
    /// Returns whether it was applied.
    pub fn apply(&self, snapshot: &Snapshot, handle: &crate::policy::PolicyHandle) -> bool {
        let current = self.generation();
        if snapshot.generation <= current && current != 0 {
            return false;
        }
        // The snapshot's time stands for when its ended sessions were heard of.
        let at = std::time::UNIX_EPOCH + Duration::from_millis(snapshot.generation);
        self.install(snapshot.clone(), handle, at);
        true
    }

    /// Puts a snapshot from the sync stream in force, whatever its generation (the stream is
    /// the control plane's word now), keeping the ended sessions heard of before.
    pub fn apply_stream_snapshot(
        &self,
        snapshot: Snapshot,
        handle: &crate::policy::PolicyHandle,
        now: SystemTime,
    ) {
        self.install(snapshot, handle, now);
        self.gap.store(false, Ordering::Release);
    }

    fn install(
        &self,
        mut snapshot: Snapshot,
        handle: &crate::policy::PolicyHandle,
        now: SystemTime,
    ) {
        let mut held = self.lock_held();
        // Sessions ended stay ended: a restarted control plane may not know them any more.
        held.heard
            .retain(|_, at| now.duration_since(*at).unwrap_or_default() < ENDED_RETENTION);
        if let Some(previous) = held.snapshot.take() {
            for (id, user) in previous.ended {
                if held.heard.contains_key(&id) {
                    snapshot.ended.entry(id).or_insert(user);
                }
            }
        }
        for id in snapshot.ended.keys() {
            held.heard.entry(id.clone()).or_insert(now);
        }
        match snapshot_keys(&snapshot) {
            Ok(keys) => self.keys.store(Arc::new(Some(keys))),
            Err(error) => {
                tracing::error!(%error, "a snapshot's keys do not parse; keeping the old ones");
            }
        }
        self.sessions
            .store(Arc::new(Sessions::from_snapshot(&snapshot)));
        handle.replace(&snapshot_grants(&snapshot));
        self.generation
            .store(snapshot.generation, Ordering::Release);
        held.snapshot = Some(snapshot);
        held.dirty = true;
    }

    /// Applies a delta of the sync stream. A delta that does not follow the last message (or
    /// comes before any snapshot) is a [`Gap`]: nothing is applied, and the proxy refuses to
    /// decide until the next snapshot.
    pub fn apply_delta(
        &self,
        delta: Delta,
        handle: &crate::policy::PolicyHandle,
        now: SystemTime,
    ) -> Result<(), Gap> {
        let mut held = self.lock_held();
        let held = &mut *held;
        let Some(snapshot) = held.snapshot.as_mut().filter(|s| s.seq == delta.after) else {
            self.gap.store(true, Ordering::Release);
            return Err(Gap {
                held: held.snapshot.as_ref().map_or(0, |s| s.seq),
                got: delta.after,
            });
        };
        let current = self.sessions.load();
        let mut identities: Option<HashMap<String, Identity>> = None;
        let mut ended: Option<HashSet<String>> = None;
        let mut grants_changed = false;
        for change in delta.changes {
            match change {
                Change::Member { user, groups } => {
                    let identities =
                        identities.get_or_insert_with(|| current.identities.as_ref().clone());
                    if groups.is_empty() {
                        identities.remove(&user);
                        snapshot.members.remove(&user);
                    } else {
                        identities
                            .insert(user.clone(), Identity::new(user.clone(), groups.clone()));
                        snapshot.members.insert(user, groups);
                    }
                }
                Change::Grants { removed, added } => {
                    for gone in removed {
                        if let Some(at) = snapshot.grants.iter().position(|g| *g == gone) {
                            snapshot.grants.remove(at);
                        }
                    }
                    snapshot.grants.extend(added);
                    grants_changed = true;
                }
                Change::Ended(sessions) => {
                    let ended = ended.get_or_insert_with(|| current.ended.as_ref().clone());
                    for (id, user) in sessions {
                        ended.insert(id.clone());
                        held.heard.entry(id.clone()).or_insert(now);
                        snapshot.ended.insert(id, user);
                    }
                }
            }
        }
        snapshot.seq = delta.seq;
        if identities.is_some() || ended.is_some() {
            self.sessions.store(Arc::new(Sessions {
                ended: ended.map_or_else(|| Arc::clone(&current.ended), Arc::new),
                identities: identities.map_or_else(|| Arc::clone(&current.identities), Arc::new),
            }));
        }
        if grants_changed {
            handle.replace(&snapshot_grants(snapshot));
        }
        held.dirty = true;
        Ok(())
    }

    /// Checks a heartbeat's `seq` against the last message applied.
    pub fn check_heartbeat(&self, seq: u64) -> Result<(), Gap> {
        let held = self.seq();
        if held == seq {
            Ok(())
        } else {
            self.gap.store(true, Ordering::Release);
            Err(Gap { held, got: seq })
        }
    }

    /// Writes what the proxy holds to the state file (atomically, mode 0600) when it changed
    /// and the last write is at least `every` old.
    pub fn persist_if_due(&self, every: Duration) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut held = self.lock_held();
        if !held.dirty || held.saved_at.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        let Some(snapshot) = &held.snapshot else {
            return Ok(());
        };
        let text = serde_json::to_vec(snapshot).context("encoding the snapshot")?;
        held.dirty = false;
        held.saved_at = Some(std::time::Instant::now());
        drop(held);
        let written = write_private(file, &text);
        if written.is_err() {
            self.lock_held().dirty = true;
        }
        written
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

    /// Reads the state file, if there is one. A file this version cannot read (another protocol,
    /// a damaged one) is left aside with a warning: the proxy then refuses to decide until the
    /// control plane is reached.
    pub fn load(&self) -> Result<Option<Snapshot>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        match std::fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
                Ok(snapshot) if snapshot.protocol == PROTOCOL => Ok(Some(snapshot)),
                Ok(snapshot) => {
                    tracing::warn!(file = %file.display(), protocol = snapshot.protocol, "the saved snapshot is of another sync protocol; ignoring it");
                    Ok(None)
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "the saved snapshot cannot be read by this version; ignoring it");
                    Ok(None)
                }
            },
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
        let mut quick_retry = false;
        loop {
            match follow(&http, &remote, &state, &handle, clock.as_ref()).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "sync with the control plane interrupted");
                }
            }
            if state.has_gap() && !quick_retry {
                // A missed change: the proxy refuses until it has a snapshot again, so ask at
                // once (once; then with the usual backoff).
                quick_retry = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            quick_retry = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    fn snapshot(generation: u64) -> Snapshot {
        Snapshot {
            protocol: PROTOCOL,
            seq: generation,
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
            ended: BTreeMap::from([("k0".to_owned(), "suzie".to_owned())]),
        }
    }

    fn handle() -> crate::policy::PolicyHandle {
        crate::policy::PolicyHandle::new("testing", &[], infra_authz::rbac::RoleSet::builtin())
    }

    fn groups(identity: &Identity) -> Vec<&str> {
        identity.groups().collect()
    }

    fn line(message: &Message) -> Vec<u8> {
        serde_json::to_vec(message).expect("json")
    }

    fn delta(after: u64, seq: u64, changes: Vec<Change>) -> Message {
        Message::Delta(Delta {
            after,
            seq,
            changes,
        })
    }

    #[test]
    fn sessions_are_live_until_they_end_with_the_snapshots_groups() {
        let sessions = Sessions::from_snapshot(&snapshot(5));
        let suzie = Identity::new("suzie".to_owned(), vec!["Old".to_owned()]);
        let carl = Identity::new("carl".to_owned(), vec!["Engineering".to_owned()]);
        let identity = sessions.identity(Some("k1"), &suzie).expect("live");
        assert_eq!(
            groups(&identity),
            vec!["Engineering"],
            "groups come from the snapshot"
        );
        let identity = sessions
            .identity(Some("never-heard-of"), &carl)
            .expect("a session the proxy was not told of is live");
        assert!(
            groups(&identity).is_empty(),
            "the token's groups are not believed: carl is in no group here"
        );
        assert!(sessions.identity(Some("k0"), &suzie).is_none(), "ended");
        assert!(
            sessions.identity(None, &suzie).is_none(),
            "no session claim"
        );
    }

    #[test]
    fn deltas_change_members_grants_and_sessions_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let state = SyncState::remote(dir.path().join("s.json"), Duration::from_mins(15));
        let handle = handle();
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let mut reader = StreamReader::new("testing");
        reader
            .line(
                &line(&Message::Snapshot(Box::new(snapshot(5)))),
                &state,
                &handle,
                now,
            )
            .expect("snapshot");
        assert_eq!(handle.grant_count(), 1);
        let carl = Identity::new("carl".to_owned(), Vec::<String>::new());
        // A user the proxy had not heard of joins a group with a grant here.
        reader
            .line(
                &line(&delta(
                    5,
                    9,
                    vec![
                        Change::Member {
                            user: "carl".into(),
                            groups: vec!["Engineering".into()],
                        },
                        Change::Grants {
                            removed: vec![],
                            added: vec![WireGrant {
                                user: Some("carl".into()),
                                group: None,
                                role: "edit".into(),
                                resource: "testing.db".into(),
                                expires_at: None,
                            }],
                        },
                    ],
                )),
                &state,
                &handle,
                now,
            )
            .expect("delta");
        let sessions = state.sessions().load_full();
        let identity = sessions.identity(Some("c1"), &carl).expect("live");
        assert_eq!(groups(&identity), vec!["Engineering"]);
        assert_eq!(handle.grant_count(), 2);
        assert_eq!(state.seq(), 9);
        // A login the proxy was never told of (session c1), then its logout: refused at once.
        reader
            .line(
                &line(&delta(
                    9,
                    10,
                    vec![
                        Change::Ended(BTreeMap::from([("c1".to_owned(), "carl".to_owned())])),
                        Change::Member {
                            user: "carl".into(),
                            groups: vec![],
                        },
                    ],
                )),
                &state,
                &handle,
                now,
            )
            .expect("delta");
        let sessions = state.sessions().load_full();
        assert!(sessions.identity(Some("c1"), &carl).is_none(), "logged out");
        let other = sessions
            .identity(Some("c2"), &carl)
            .expect("another session");
        assert!(groups(&other).is_empty(), "carl left Engineering");
        reader
            .line(&line(&Message::Heartbeat(10)), &state, &handle, now)
            .expect("heartbeat at the same seq");
        assert!(state.refuse_reason(now).is_none());
        // What the proxy holds is saved, deltas included.
        state.persist_if_due(Duration::ZERO).expect("save");
        let saved = state.load().expect("load").expect("saved");
        assert_eq!(saved.seq, 10);
        assert!(saved.ended.contains_key("c1"));
        assert_eq!(saved.grants.len(), 2);
    }

    #[test]
    fn a_gap_refuses_until_a_new_snapshot_and_ended_sessions_survive_it() {
        let dir = tempfile::tempdir().expect("dir");
        let state = SyncState::remote(dir.path().join("s.json"), Duration::from_mins(15));
        let handle = handle();
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let suzie = Identity::new("suzie".to_owned(), Vec::<String>::new());
        let mut reader = StreamReader::new("testing");
        assert!(
            reader
                .line(&line(&delta(0, 1, vec![])), &state, &handle, now)
                .is_err(),
            "a delta before any snapshot"
        );
        let mut reader = StreamReader::new("testing");
        reader
            .line(
                &line(&Message::Snapshot(Box::new(snapshot(5)))),
                &state,
                &handle,
                now,
            )
            .expect("snapshot");
        assert!(state.refuse_reason(now).is_none());
        reader
            .line(
                &line(&delta(
                    5,
                    6,
                    vec![Change::Ended(BTreeMap::from([(
                        "k7".to_owned(),
                        "suzie".to_owned(),
                    )]))],
                )),
                &state,
                &handle,
                now,
            )
            .expect("delta");
        // Change 7 never came.
        let error = reader
            .line(&line(&delta(7, 8, vec![])), &state, &handle, now)
            .expect_err("a gap");
        assert!(format!("{error:#}").contains("missed"), "{error:#}");
        assert!(
            state
                .refuse_reason(now)
                .expect("refuses")
                .contains("missed a change")
        );
        // A heartbeat at another seq is a gap too.
        assert!(state.check_heartbeat(99).is_err());
        // The reconnect's snapshot comes from a control plane that forgot k7 (a restart).
        let mut again = snapshot(20);
        again.ended.clear();
        let mut reader = StreamReader::new("testing");
        reader
            .line(
                &line(&Message::Snapshot(Box::new(again))),
                &state,
                &handle,
                now,
            )
            .expect("snapshot");
        assert!(state.refuse_reason(now).is_none(), "in force again");
        let sessions = state.sessions().load_full();
        assert!(
            sessions.identity(Some("k7"), &suzie).is_none(),
            "an ended session stays ended across snapshots"
        );
        // Unknown messages and other protocols end the stream.
        assert!(
            reader
                .line(br#"{"teleport":1}"#, &state, &handle, now)
                .is_err()
        );
        let mut other = snapshot(30);
        other.protocol = PROTOCOL + 1;
        assert!(
            StreamReader::new("testing")
                .line(
                    &line(&Message::Snapshot(Box::new(other))),
                    &state,
                    &handle,
                    now
                )
                .is_err()
        );
        let mut elsewhere = snapshot(30);
        elsewhere.destination = "prod".into();
        assert!(
            StreamReader::new("testing")
                .line(
                    &line(&Message::Snapshot(Box::new(elsewhere))),
                    &state,
                    &handle,
                    now
                )
                .is_err()
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
        let handle = handle();
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
        // A file of the first protocol (live sessions, no version) is set aside, not fatal.
        std::fs::write(
            dir.path().join("s.json"),
            br#"{"generation":1,"destination":"testing","issuer":"i","jwks":{},"grants":[],"members":{},"sessions":{},"ended":{}}"#,
        )
        .expect("write");
        assert_eq!(state.load().expect("load"), None);
        assert!(SyncState::in_process().refuse_reason(now).is_none());
    }
}
