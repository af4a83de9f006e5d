//! The door before the quota: how many calls the gateway, and each user, may have in flight.
//!
//! Two caps protect the gateway itself rather than express a product limit (that is the
//! ledger's `limits.max_concurrent`):
//!
//! - `server.max_in_flight`, all calls together, read off the in-flight gauge every call already
//!   counts in: past it a call is refused at once with 503 and `Retry-After` instead of queueing
//!   behind a slow upstream, so memory and descriptors stay bounded under a flood;
//! - `server.max_in_flight_per_user`, counted here from the moment the caller is known until
//!   the call ends — a body still trickling in counts — so one token cannot hold thousands of
//!   sockets (429, like the ledger's concurrency refusal).
//!
//! A [`Pass`] is held by the call and gives its place back when dropped, whichever way the call
//! ends. The map holds only users with a call in flight; taking and returning a place is one
//! short lock (no await, no allocation for a user already in the map).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Calls in flight per user. Share it as `Arc<UserGate>`.
#[derive(Debug, Default)]
pub struct UserGate {
    counts: Mutex<HashMap<Arc<str>, u32, foldhash::fast::RandomState>>,
}

/// One call's place at the door; dropping it gives the place back.
#[derive(Debug)]
pub struct Pass {
    gate: Arc<UserGate>,
    user: Arc<str>,
}

impl UserGate {
    /// A place for one more call of `user`, or `None` when `cap` calls are already in flight.
    pub fn enter(self: &Arc<Self>, user: &Arc<str>, cap: u32) -> Option<Pass> {
        let mut counts = self.counts.lock();
        let n = counts.entry(Arc::clone(user)).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                counts.remove(user);
            }
            return None;
        }
        *n += 1;
        Some(Pass {
            gate: Arc::clone(self),
            user: Arc::clone(user),
        })
    }

    /// Calls of `user` in flight now.
    pub fn in_flight(&self, user: &str) -> u32 {
        self.counts.lock().get(user).copied().unwrap_or(0)
    }

    /// Users with a call in flight now.
    pub fn users(&self) -> usize {
        self.counts.lock().len()
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock();
        if let Some(n) = counts.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_cap_places_and_each_one_comes_back() {
        let gate = Arc::new(UserGate::default());
        let alice: Arc<str> = "alice".into();
        let bob: Arc<str> = "bob".into();
        let a1 = gate.enter(&alice, 2).expect("first place");
        let a2 = gate.enter(&alice, 2).expect("second place");
        assert!(gate.enter(&alice, 2).is_none(), "a third is over the cap");
        let b1 = gate.enter(&bob, 2).expect("another user is not affected");
        assert_eq!(gate.in_flight("alice"), 2);
        drop(a1);
        assert_eq!(gate.in_flight("alice"), 1);
        let a3 = gate
            .enter(&alice, 2)
            .expect("a returned place can be taken again");
        drop((a2, a3, b1));
        assert_eq!(
            gate.users(),
            0,
            "the map forgets users with nothing in flight"
        );
    }

    #[test]
    fn a_cap_of_zero_admits_nobody_and_leaves_no_entry() {
        let gate = Arc::new(UserGate::default());
        let carol: Arc<str> = "carol".into();
        assert!(gate.enter(&carol, 0).is_none());
        assert_eq!(gate.users(), 0);
    }
}
