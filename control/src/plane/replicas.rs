//! Replicas of the control plane (on PostgreSQL) tell each other of changes: a notice on every
//! change, with the sessions that ended, so every replica's proxies hear of it at once.

use std::sync::Arc;

use super::ControlPlane;

/// What a control replica tells the others when something changed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Announcement {
    /// The replica that made the change.
    pub(super) from: String,
    /// Sessions that ended, (id, user).
    #[serde(default)]
    pub(super) ended: Vec<(String, String)>,
}

impl ControlPlane {
    /// Tells the other control replicas (PostgreSQL) about a change.
    pub(super) fn announce(&self, announcement: &Announcement) {
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
}
