//! Policy snapshots for proxies: a destination's grants, every user's groups, the live and
//! lately ended sessions, and the token keys, with a generation number.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use infra_authz::policy::Grant;

use super::ControlPlane;
use crate::store::StoreError;

/// How old the shared part of snapshots may get with no change: access keys lapse by time
/// (expiry, inactivity since their last use) without a change notice.
pub(super) const SHARED_VIEW_MAX_AGE: Duration = Duration::from_secs(5);

/// Memberships and access keys as of one change.
#[derive(Debug)]
pub(super) struct SharedView {
    change: u64,
    built: std::time::Instant,
    members: std::collections::BTreeMap<String, Vec<String>>,
    keys: Vec<crate::store::AccessKey>,
}

impl ControlPlane {
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
}
