//! Telling proxies what changed: the code that makes a change says what it touched (a
//! [`Hint`]); one task per replica reads the state that hint names from the store, in order,
//! and hands the result (an [`Event`] with a sequence number) to every sync stream and to the
//! proxy in this process. The other replicas (PostgreSQL) get the same hints and read the same
//! state from the shared store.
//!
//! Reading the store after the change, one hint at a time, is what keeps deltas right when
//! changes race: whatever order two writes to a user's memberships commit and announce in, the
//! last event about that user carries what the store held after both. A hint the task cannot
//! resolve (the store failed) becomes [`Event::Everything`]: every stream sends a new snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use infra_api::sync::WireGrant;
use tokio::sync::mpsc;

use super::ControlPlane;
use super::replicas::Announcement;
use crate::store::StoreError;

/// How many events a slow sync stream may fall behind before it gets a snapshot instead.
pub(super) const EVENT_BACKLOG: usize = 4096;

/// What a change touched, as the code that made it says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Hint {
    /// Something no delta describes changed (the policy file, a deleted user or group, the
    /// keys, lapsed grants): every stream sends a new snapshot.
    Everything,
    /// `user`'s membership of `group` changed.
    Member {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// The grants of `destination` changed.
    Grants {
        /// The destination.
        destination: String,
    },
    /// These sessions ended: (access key id, user).
    Ended(Vec<(String, String)>),
}

/// A change as the sync streams receive it: what the store held after it.
#[derive(Debug)]
pub enum Event {
    /// Send a new snapshot.
    Everything,
    /// `user`'s membership of `group` changed; `groups` are all of theirs now.
    Member {
        /// The user.
        user: String,
        /// The group whose membership changed.
        group: String,
        /// Every group of the user now.
        groups: Vec<String>,
    },
    /// The grants of `destination` now (those in force, without the control plane's own).
    Grants {
        /// The destination.
        destination: String,
        /// Its grants.
        grants: Arc<Vec<WireGrant>>,
    },
    /// Sessions that ended: access key id → user.
    Ended(BTreeMap<String, String>),
}

/// An event and its place in this replica's order.
#[derive(Debug)]
pub struct Published {
    /// Increases by one with every event of this replica.
    pub seq: u64,
    /// What changed.
    pub event: Event,
}

impl ControlPlane {
    /// Tells every proxy, here and through the other control replicas, that something changed
    /// that no delta describes: each sync stream sends its destination's snapshot again. The
    /// call for any change that has no more precise one below (it is always right, only dearer).
    pub fn changed(&self) {
        self.publish(Hint::Everything);
    }

    /// Tells every proxy that `user`'s membership of `group` changed (call after the store).
    pub fn member_changed(&self, user: &str, group: &str) {
        self.publish(Hint::Member {
            user: user.to_owned(),
            group: group.to_owned(),
        });
    }

    /// Tells the proxies of `destination` that its grants changed (call after the store).
    pub fn grants_changed(&self, destination: &str) {
        self.publish(Hint::Grants {
            destination: destination.to_owned(),
        });
    }

    /// Notes that the session `id` of `user` has ended (logout, a deleted key or user, a
    /// provider's refusal) and tells every proxy, which refuses its tokens from then on.
    pub fn session_ended(&self, id: &str, user: &str) {
        self.sessions_ended(vec![(id.to_owned(), user.to_owned())]);
    }

    /// [`Self::session_ended`] for several sessions ((access key id, user)) at once.
    pub fn sessions_ended(&self, sessions: Vec<(String, String)>) {
        if sessions.is_empty() {
            return;
        }
        let now = self.now();
        {
            let mut ended = self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, user) in &sessions {
                ended.insert(id.clone(), (user.clone(), now));
            }
        }
        // Kept in the store too, for a restart of this control plane and for replicas that
        // start later (the proxies following this one hear of it from the event below).
        let store = self.store.clone();
        let recorded = sessions.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_ended_sessions(&recorded, now).await {
                tracing::warn!(%error, "cannot record ended sessions in the store");
            }
        });
        self.publish(Hint::Ended(sessions));
    }

    /// Reads the sessions that ended lately from the store (at start: another replica's, or this
    /// one's before a restart).
    pub(super) async fn load_ended(&self) -> Result<(), StoreError> {
        let keep = self.config.token_ttl + std::time::Duration::from_mins(2);
        let since = self
            .now()
            .checked_sub(keep)
            .unwrap_or(std::time::UNIX_EPOCH);
        let stored = self.store.ended_sessions(since).await?;
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, user, at) in stored {
            ended.entry(id).or_insert((user, at));
        }
        Ok(())
    }

    /// Queues `hint` for this replica's streams and announces it to the other replicas.
    fn publish(&self, hint: Hint) {
        self.announce(&Announcement {
            from: self.replica.clone(),
            hints: vec![hint.clone()],
        });
        self.enqueue(hint);
    }

    /// Queues `hint` for this replica's streams only (a hint another replica announced).
    pub(super) fn enqueue(&self, hint: Hint) {
        if self.hints.send(hint).is_err() {
            tracing::error!("the change publisher has stopped; proxies will not hear of changes");
        }
    }

    /// A receiver of every event from now on. Events numbered at or below the `seq` of a
    /// snapshot built after subscribing are already in that snapshot.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Arc<Published>> {
        self.events.subscribe()
    }

    /// The events' publisher: resolves each hint against the store, in order.
    pub(super) fn spawn_publisher(self: &Arc<Self>, mut hints: mpsc::UnboundedReceiver<Hint>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(hint) = hints.recv().await {
                let Some(plane) = weak.upgrade() else {
                    break;
                };
                plane.resolve(hint).await;
            }
        });
    }

    async fn resolve(&self, hint: Hint) {
        // The write lock orders events with snapshots: a snapshot is read either wholly before
        // an event's state was read, or wholly after the event was sent.
        let mut seq = self.published.write().await;
        let event = match self.read_event(hint).await {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "reading a change failed; proxies get a new snapshot");
                Event::Everything
            }
        };
        *seq += 1;
        // No receiver (no stream open) is no error.
        let _ = self.events.send(Arc::new(Published { seq: *seq, event }));
        self.changes.send_modify(|n| *n += 1);
    }

    async fn read_event(&self, hint: Hint) -> Result<Event, StoreError> {
        Ok(match hint {
            Hint::Everything => {
                // Also what a replica does when it may have missed notices (its connection to
                // PostgreSQL was lost): the sessions that ended meanwhile are in the store.
                self.load_ended().await?;
                Event::Everything
            }
            Hint::Member { user, group } => {
                let groups = match self.store.groups_of(&user).await {
                    Ok(groups) => groups,
                    Err(StoreError::NotFound { .. }) => Vec::new(),
                    Err(error) => return Err(error),
                };
                Event::Member {
                    user,
                    group,
                    groups,
                }
            }
            Hint::Grants { destination } => {
                let grants = Arc::new(self.destination_grants(&destination).await?);
                Event::Grants {
                    destination,
                    grants,
                }
            }
            Hint::Ended(sessions) => Event::Ended(sessions.into_iter().collect()),
        })
    }
}
