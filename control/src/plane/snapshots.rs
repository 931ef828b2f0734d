//! Policy snapshots for proxies: a destination's grants, the members of the groups those grants
//! name, the lately ended sessions, and the token keys, with the `seq` of the last event they
//! include (see [`super::fanout`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use infra_api::sync::{Message, PROTOCOL, Snapshot, WireGrant};
use infra_authz::policy::Grant;

use super::ControlPlane;
use crate::store::StoreError;

/// How old the memberships shared by every destination's snapshot may get with no event (a
/// safety net: every change of a membership publishes one).
pub(super) const SHARED_VIEW_MAX_AGE: Duration = Duration::from_secs(5);
/// How old a snapshot kept for sync streams may get with no event: grants lapse by time.
const CACHED_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// Memberships as of one event: group → its members.
#[derive(Debug)]
pub(super) struct SharedView {
    seq: u64,
    built: Instant,
    groups: HashMap<String, Vec<String>>,
}

/// A destination's snapshot as sync streams send it, built once per event for all of them.
#[derive(Debug)]
pub struct CachedSnapshot {
    /// The last event it includes.
    pub seq: u64,
    built: Instant,
    /// Its grants (a stream diffs the grants of later events against them).
    pub grants: Arc<Vec<WireGrant>>,
    /// The `{"snapshot": …}` line, newline included.
    pub line: bytes::Bytes,
}

impl ControlPlane {
    /// The policy snapshot of `destination` now.
    pub async fn snapshot(&self, destination: &str) -> Result<Snapshot> {
        let seq = self.published.read().await;
        self.build_snapshot(destination, *seq).await
    }

    /// The snapshot of `destination` as a sync stream sends it: built once per event (and at
    /// most [`CACHED_SNAPSHOT_MAX_AGE`] old) however many streams follow the destination.
    pub async fn stream_snapshot(&self, destination: &str) -> Result<Arc<CachedSnapshot>> {
        let seq = self.published.read().await;
        let mut cached = self.cached.lock().await;
        if let Some(snapshot) = cached.get(destination)
            && snapshot.seq == *seq
            && snapshot.built.elapsed() < CACHED_SNAPSHOT_MAX_AGE
        {
            return Ok(Arc::clone(snapshot));
        }
        let snapshot = self.build_snapshot(destination, *seq).await?;
        let grants = Arc::new(snapshot.grants.clone());
        let mut line =
            serde_json::to_vec(&Message::Snapshot(Box::new(snapshot))).context("a snapshot")?;
        line.push(b'\n');
        let built = Arc::new(CachedSnapshot {
            seq: *seq,
            built: Instant::now(),
            grants,
            line: line.into(),
        });
        cached.insert(destination.to_owned(), Arc::clone(&built));
        Ok(built)
    }

    /// The snapshot of `destination` as of event `seq` (the caller holds `published` for
    /// reading).
    async fn build_snapshot(&self, destination: &str, seq: u64) -> Result<Snapshot> {
        let now = self.now();
        let grants = self.destination_grants(destination).await?;
        let named: BTreeSet<&str> = grants.iter().filter_map(|g| g.group.as_deref()).collect();
        let shared = self.shared_view(seq).await?;
        let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for group in named {
            for user in shared.groups.get(group).into_iter().flatten() {
                members
                    .entry(user.clone())
                    .or_default()
                    .push(group.to_owned());
            }
        }
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
        Ok(Snapshot {
            protocol: PROTOCOL,
            seq,
            generation,
            destination: destination.to_owned(),
            issuer: self.config.issuer.clone(),
            jwks,
            grants,
            members,
            ended,
        })
    }

    /// The grants of `destination` in force, as snapshots carry them (without the control
    /// plane's own).
    pub(super) async fn destination_grants(
        &self,
        destination: &str,
    ) -> Result<Vec<WireGrant>, StoreError> {
        Ok(self
            .store
            .list_grants_on(destination, self.now())
            .await?
            .iter()
            .map(|stored| &stored.grant)
            .filter(|g| !g.resource.is_control())
            .map(WireGrant::from)
            .collect())
    }

    /// The memberships every destination's snapshot draws from, read once per event (and at
    /// most [`SHARED_VIEW_MAX_AGE`] old) however many proxies are streaming.
    async fn shared_view(&self, seq: u64) -> Result<Arc<SharedView>, StoreError> {
        let mut cached = self.shared.lock().await;
        if let Some(view) = cached.as_ref()
            && view.seq == seq
            && view.built.elapsed() < SHARED_VIEW_MAX_AGE
        {
            return Ok(Arc::clone(view));
        }
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for (user, group) in self.store.memberships().await? {
            groups.entry(group).or_default().push(user);
        }
        let view = Arc::new(SharedView {
            seq,
            built: Instant::now(),
            groups,
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
}
