//! `[auth]` as written in gateway.toml: the accepted algorithms, where the keys come from, and
//! the claims to check. The type lives with the code that gives it meaning, so that `auth`
//! depends on nothing above it; `config` re-exports it, reads the secret and the key file it
//! names, and hands them to [`Verifier::new`](super::Verifier::new).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A JWT signature algorithm Tollgate accepts. Chosen by configuration, never by the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// `[auth]`: how end-user JWTs are verified.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding the HS256 shared secret.
    pub jwt_secret_env: String,
    /// Accepted algorithms. HS256 needs the secret; RS256/ES256 need `public_key_file` or
    /// `jwks_url`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// PEM file with the RSA or EC public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    /// The login provider's JWK Set (`https://…/.well-known/jwks.json`): its RS256/ES256 keys,
    /// fetched at start and kept fresh in the background. Plain `http://` only to a loopback
    /// host.
    pub jwks_url: Option<String>,
    /// The shortest time between two scheduled refreshes of `jwks_url` (seconds): a
    /// `Cache-Control: max-age` below it is raised to it.
    pub jwks_refresh_min_secs: u64,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    pub leeway_secs: u64,
    /// The claim naming the user.
    pub user_claim: String,
    /// The claim that marks an admin (string, or array of strings, holding `admin_value`).
    pub admin_claim: String,
    /// The value of `admin_claim` that makes a caller an admin.
    pub admin_value: String,
    /// The claim naming the user's plan (`[plans.NAME]`): a string, or an array of strings of
    /// which the first naming a plan counts.
    pub plan_claim: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret_env: "JWT_SECRET".into(),
            algorithms: vec![JwtAlgorithm::HS256],
            public_key_file: None,
            jwks_url: None,
            jwks_refresh_min_secs: 60,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            user_claim: "sub".into(),
            admin_claim: "role".into(),
            admin_value: "admin".into(),
            plan_claim: "plan".into(),
        }
    }
}
