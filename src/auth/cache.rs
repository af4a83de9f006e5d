//! The cache of verified tokens: a bounded, sharded map from a token to the [`Caller`] it
//! verified into, so that a client sending the same JWT on every call pays for the signature
//! once. Bounded in memory (capacity and token length), never served at or past `exp`, never
//! served once the key that verified it has left the key set of `auth.jwks_url` (the entry
//! remembers the key's id), and a hit is authorised only by comparing the whole token in
//! constant time.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};

use super::Caller;

/// Default number of verified tokens kept (over all shards).
pub(super) const DEFAULT_CACHE_CAPACITY: usize = 16 * 1024;
const CACHE_SHARDS: usize = 16;

/// A bounded, sharded map of verified tokens → caller. The map key is a keyed hash of the token's
/// last 32 bytes (its signature, which differs between any two tokens that verify); a hit is
/// authorised only by comparing the full stored token, in constant time. Entries are never served
/// at or past their `exp`. A full shard first drops its expired entries, then is cleared.
pub(super) struct TokenCache {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
    shard_capacity: usize,
}

type Shard = HashMap<u64, CachedToken, BuildHasherDefault<IdentityHasher>>;

struct CachedToken {
    token: Box<str>,
    caller: Arc<Caller>,
    exp: u64,
    /// The key set's id of the key that verified the token; `None` for keys that live as long
    /// as the verifier.
    key: Option<u64>,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            hasher: RandomState::new(),
            shards: (0..CACHE_SHARDS).map(|_| RwLock::default()).collect(),
            shard_capacity: capacity.div_ceil(CACHE_SHARDS),
        }
    }

    fn slot(&self, token: &str) -> (u64, usize) {
        let tail = &token.as_bytes()[token.len().saturating_sub(32)..];
        let hash = self.hasher.hash_one(tail);
        // The top bits pick the shard; the map inside uses the whole hash.
        let shard = usize::try_from(hash >> 60).unwrap_or(0) % CACHE_SHARDS;
        (hash, shard)
    }

    /// The caller of `token`, if cached, before its `exp`, and verified by a key that `held`
    /// says is still in the key set.
    pub(super) fn get(&self, token: &str, now: u64, held: impl Fn(u64) -> bool) -> Option<Caller> {
        if self.shard_capacity == 0 {
            return None;
        }
        let (hash, shard) = self.slot(token);
        let shard = &self.shards[shard];
        let caller = {
            // Hits share the read lock: concurrent calls with one token do not queue.
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            let entry = map.get(&hash)?;
            if entry.exp > now && entry.key.is_none_or(&held) {
                if !constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
                    return None;
                }
                Some(Arc::clone(&entry.caller))
            } else {
                None
            }
        };
        match caller {
            Some(caller) => Some(Caller::clone(&caller)),
            None => {
                // Expired or its key gone (rare): drop it, unless another call replaced it
                // meanwhile.
                let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
                if map
                    .get(&hash)
                    .is_some_and(|e| e.exp <= now || !e.key.is_none_or(&held))
                {
                    map.remove(&hash);
                }
                None
            }
        }
    }

    pub(super) fn insert(&self, token: &str, caller: Caller, exp: u64, now: u64, key: Option<u64>) {
        if self.shard_capacity == 0 {
            return;
        }
        let (hash, shard) = self.slot(token);
        let entry = CachedToken {
            token: token.into(),
            caller: Arc::new(caller),
            exp,
            key,
        };
        let mut map = self.shards[shard]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.shard_capacity && !map.contains_key(&hash) {
            map.retain(|_, e| e.exp > now);
            if map.len() >= self.shard_capacity {
                map.clear();
            }
        }
        map.insert(hash, entry);
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Equality whose time depends only on the lengths, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The map keys are already keyed hashes: pass them through instead of hashing them again.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::json;

    use super::*;
    use crate::auth::testkit::*;
    use crate::auth::{AuthConfig, AuthError, JwtAlgorithm, Verifier};

    fn moving_clock(v: Verifier) -> (Verifier, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(NOW));
        let clock = Arc::clone(&now);
        (v.with_clock(move || clock.load(Ordering::Relaxed)), now)
    }

    #[test]
    fn a_cached_token_returns_the_same_caller() {
        let v = hs_verifier();
        let token = hs(&with(claims(), json!({"role": "admin"})));
        let first = v.verify(&token).unwrap();
        assert_eq!(v.cached_tokens(), 1);
        let second = v.verify(&token).unwrap();
        assert_eq!(first, second);
        assert_eq!(v.cached_tokens(), 1);
    }

    #[test]
    fn a_cached_token_is_refused_once_expired() {
        let (v, now) = moving_clock(verifier_for(&AuthConfig {
            leeway_secs: 0,
            ..auth(&[JwtAlgorithm::HS256])
        }));
        let token = hs(&with(claims(), json!({"exp": NOW + 60})));
        assert!(v.verify(&token).is_ok());
        assert_eq!(v.cached_tokens(), 1);
        now.store(NOW + 59, Ordering::Relaxed);
        assert!(v.verify(&token).is_ok());
        now.store(NOW + 61, Ordering::Relaxed);
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn the_cache_is_never_served_past_exp_even_within_leeway() {
        let (v, now) = moving_clock(hs_verifier());
        let token = hs(&with(claims(), json!({"exp": NOW + 60})));
        assert!(v.verify(&token).is_ok());
        now.store(NOW + 60, Ordering::Relaxed);
        assert!(v.cache.get(&token, NOW + 60, |_| true).is_none());
        // Within leeway the full check still accepts it, without caching it again.
        assert!(v.verify(&token).is_ok());
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn a_forgery_sharing_a_cached_signature_is_verified_in_full() {
        let v = hs_verifier();
        let token = hs(&claims());
        assert!(v.verify(&token).is_ok());
        let (_, signature) = token.rsplit_once('.').unwrap();
        let header = b64json(&json!({"alg": "HS256", "typ": "JWT"}));
        let forged = format!(
            "{header}.{}.{signature}",
            b64json(&with(claims(), json!({"role": "admin"})))
        );
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        assert!(!v.verify(&token).unwrap().is_admin);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let v = hs_verifier().with_cache_capacity(32);
        for i in 0..1_000 {
            assert!(
                v.verify(&hs(&with(claims(), json!({"sub": format!("u-{i}")}))))
                    .is_ok()
            );
        }
        assert!(v.cached_tokens() <= 32, "{} cached", v.cached_tokens());
        assert!(v.cached_tokens() > 0);
    }

    #[test]
    fn a_zero_capacity_disables_the_cache() {
        let v = hs_verifier().with_cache_capacity(0);
        assert!(v.verify(&hs(&claims())).is_ok());
        assert_eq!(v.cached_tokens(), 0);
    }

    #[test]
    fn constant_time_eq_compares_whole_inputs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
