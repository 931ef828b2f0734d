//! Replicas of the control plane (on PostgreSQL) tell each other of changes: a notice on every
//! change with what it touched (the [`Hint`]s), so that every replica reads the new state from
//! the shared store and its proxies hear of it at once.

use std::sync::Arc;

use super::ControlPlane;
use super::fanout::Hint;

/// The largest notice payload sent; PostgreSQL refuses payloads of 8000 bytes or more. A larger
/// announcement is sent as [`Hint::Everything`].
const MAX_PAYLOAD: usize = 7900;

/// What a control replica tells the others when something changed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Announcement {
    /// The replica that made the change.
    pub(super) from: String,
    /// What the change touched.
    #[serde(default)]
    pub(super) hints: Vec<Hint>,
}

impl ControlPlane {
    /// Tells the other control replicas (PostgreSQL) about a change, in the order changes are
    /// made (one task sends every notice).
    pub(super) fn announce(&self, announcement: &Announcement) {
        let Some(notices) = &self.notices else {
            return;
        };
        let payload = match serde_json::to_string(announcement) {
            Ok(payload) if payload.len() <= MAX_PAYLOAD => payload,
            Ok(_) if matches!(announcement.hints.as_slice(), [Hint::Ended(s)] if s.len() > 1) => {
                // Ended sessions must reach the other replicas as such (their snapshots list
                // them from memory): halve the list until each notice fits.
                if let [Hint::Ended(sessions)] = announcement.hints.as_slice() {
                    let (first, second) = sessions.split_at(sessions.len() / 2);
                    for half in [first, second] {
                        self.announce(&Announcement {
                            from: announcement.from.clone(),
                            hints: vec![Hint::Ended(half.to_vec())],
                        });
                    }
                }
                return;
            }
            _ => match serde_json::to_string(&Announcement {
                from: announcement.from.clone(),
                hints: vec![Hint::Everything],
            }) {
                Ok(payload) => payload,
                Err(_) => return,
            },
        };
        let _ = notices.send(payload);
    }

    /// Sends the announcements queued by [`Self::announce`], one after the other (PostgreSQL).
    pub(super) fn spawn_notifier(
        self: &Arc<Self>,
        mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(payload) = queue.recv().await {
                if let Err(error) = store.notify_change(&payload).await {
                    tracing::warn!(%error, "cannot tell the other control replicas about a change");
                }
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
                    let Ok(announcement) = serde_json::from_str::<Announcement>(payload) else {
                        // A lost connection (empty payload) or a notice this replica cannot
                        // read: changes may have been missed.
                        this.enqueue(Hint::Everything);
                        return;
                    };
                    if announcement.from == this.replica {
                        return;
                    }
                    let now = this.now();
                    for hint in announcement.hints {
                        if let Hint::Ended(sessions) = &hint {
                            let mut ended = this
                                .ended
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            for (id, user) in sessions {
                                ended.insert(id.clone(), (user.clone(), now));
                            }
                        }
                        this.enqueue(hint);
                    }
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "cannot follow the other control replicas");
            }
        });
    }
}
