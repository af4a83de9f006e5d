//! End-user credentials: where the JWT is found in a request ([`credential()`],
//! [`strip_key_param`], [`strip_credential_headers`]), its verification into a [`Caller`]
//! ([`Verifier`]), the login provider's rotating keys ([`Jwks`], `auth.jwks_url`), and minting
//! tokens for trials ([`mint()`], used by `tollgate token`).
//!
//! The accepted algorithms come from `[auth]` only. The token header merely picks one of the
//! configured keys (by `alg`, and by `kid` among the keys of `auth.jwks_url`), and each key is
//! bound to one algorithm, so `alg: none` and HS/RS confusion are refused before any signature
//! work. Only the key set's refresh task logs (what it fetched, or why it could not); no error
//! the module returns ever carries the token, a claim value or a key: [`AuthError`]'s messages
//! are fixed strings that are safe to show to the client.
//!
//! Verification runs on every call, so [`Verifier`] builds its keys once and keeps a bounded
//! cache of tokens it has already verified. A cache hit compares the full token in constant time
//! and is never served at or past the token's `exp`.
//!
//! The parts: `credential` (where the JWT is in a request), `verify` (the [`Verifier`] and its
//! claim checks), `cache` (the verified tokens), `jwks` (the key set of `auth.jwks_url`, its
//! fetch and its refresh task), `mint` (trial tokens).

mod cache;
mod credential;
mod jwks;
mod mint;
mod settings;
#[cfg(test)]
mod testkit;
mod verify;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use credential::{
    CREDENTIAL_HEADERS, X_GOOG_API_KEY, credential, strip_credential_headers, strip_key_param,
};
pub use jwks::{
    Jwks, JwksError, JwksProblem, JwksSettings, JwksUrl, MAX_JWKS_BYTES, RefreshObserver,
    RefreshResult, UNKNOWN_KID_INTERVAL, UNKNOWN_KID_WAIT,
};
pub use mint::{MintClaims, MintError, mint, mint_claims};
pub use settings::{AuthConfig, JwtAlgorithm};
pub use verify::{Verifier, VerifierError};

/// A verified end user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The `auth.user_claim` claim (numbers are stringified).
    pub user_id: Arc<str>,
    /// The `email` claim, when it is a string.
    pub email: Option<String>,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// Whether the `auth.admin_claim` claim holds `auth.admin_value`.
    pub is_admin: bool,
    /// The values of the `auth.plan_claim` claim, in order: a string (or number) is one, an
    /// array gives its strings (at most 16; values longer than 64 bytes or holding control
    /// characters are skipped). `None` when the token carries none. Which one names a plan is
    /// `plan::Plans::choose`'s decision.
    pub plan: Option<Arc<[Box<str>]>>,
}

/// Why a credential was refused. Every message is fixed text, safe to show to the client: none
/// carries the token or anything read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credential: send the user's JWT as the API key")]
    MissingCredential,
    #[error("the credential is not a well-formed JWT")]
    Malformed,
    #[error("the credential's signature does not verify")]
    BadSignature,
    #[error("the credential is signed with a key this gateway does not know")]
    UnknownKey,
    #[error("the credential has expired")]
    Expired,
    #[error("the credential is not valid yet")]
    NotYetValid,
    #[error("the credential has no expiry (exp)")]
    MissingExpiry,
    #[error("the credential was issued by an issuer this gateway does not accept")]
    WrongIssuer,
    #[error("the credential is meant for another audience")]
    WrongAudience,
    #[error("the credential is signed with an algorithm this gateway does not accept")]
    DisallowedAlgorithm,
    #[error("the credential does not name a valid user")]
    MissingUserClaim,
}

/// Seconds since the Unix epoch: the clock of verification (unless a test replaces it) and of
/// minting.
fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
