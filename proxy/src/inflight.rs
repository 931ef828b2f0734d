//! Requests in flight per user: each user may have at most so many requests at the apiserver at
//! once, so that one user (a runaway script, a controller with a watch per object) cannot take
//! every upstream stream from everyone else. A request holds its place from the moment it is
//! forwarded until its response has been sent or dropped, so a watch, a followed log or an exec
//! session holds one for as long as it is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The requests in flight of every user.
#[derive(Debug, Default)]
pub struct InFlight {
    /// 0: no limit.
    limit: usize,
    users: Mutex<HashMap<Arc<str>, usize>>,
}

impl InFlight {
    /// At most `limit` requests in flight per user (0: no limit).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            users: Mutex::new(HashMap::new()),
        })
    }

    /// The limit (0: none).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more request of `user`, or `None` when the user has `limit` already.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Option<InFlightRequest> {
        if self.limit == 0 {
            return Some(InFlightRequest(None));
        }
        let mut users = self.lock();
        let key = match users.get_key_value(user) {
            Some((key, &open)) => {
                if open >= self.limit {
                    return None;
                }
                Arc::clone(key)
            }
            None => Arc::from(user),
        };
        *users.entry(Arc::clone(&key)).or_insert(0) += 1;
        Some(InFlightRequest(Some((Arc::clone(self), key))))
    }

    /// Requests `user` has in flight now.
    pub fn of(&self, user: &str) -> usize {
        self.lock().get(user).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's place; given back when dropped.
#[derive(Debug)]
pub struct InFlightRequest(Option<(Arc<InFlight>, Arc<str>)>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        if let Some((in_flight, user)) = self.0.take() {
            let mut users = in_flight.lock();
            if let Some(open) = users.get_mut(&user) {
                *open -= 1;
                if *open == 0 {
                    users.remove(&user);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_limit_waits_for_a_place_and_others_do_not() {
        let in_flight = InFlight::new(2);
        let first = in_flight.acquire("suzie").expect("room");
        let _second = in_flight.acquire("suzie").expect("room");
        assert!(in_flight.acquire("suzie").is_none(), "the third waits");
        let _other = in_flight.acquire("carl").expect("another user has room");
        drop(first);
        assert_eq!(in_flight.of("suzie"), 1);
        let _third = in_flight.acquire("suzie").expect("a place came back");
        assert_eq!(in_flight.of("suzie"), 2);
    }

    #[test]
    fn users_with_nothing_in_flight_are_forgotten() {
        let in_flight = InFlight::new(5);
        for user in ["a", "b", "c"] {
            drop(in_flight.acquire(user).expect("room"));
        }
        assert!(in_flight.lock().is_empty());
    }

    #[test]
    fn zero_means_no_limit() {
        let in_flight = InFlight::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| in_flight.acquire("suzie").expect("no limit"))
            .collect();
        assert_eq!(held.len(), 1000);
        assert!(in_flight.lock().is_empty(), "nothing is counted");
    }
}
