//! Minting HS256 tokens for trials (`tollgate token`): the claims the configured verifier
//! expects (`auth.user_claim`, the admin claim, `iss`/`aud` when configured) signed with the
//! shared secret, so a minted token passes the same checks as one from a login backend.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::settings::AuthConfig;
use super::system_clock;
use crate::secret::Secret;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the subject must not be empty")]
    EmptySubject,
    #[error("the time to live must be at least one second")]
    BadTtl,
    #[error(
        "claim `{0}` would be written twice; check auth.user_claim, auth.admin_claim and auth.plan_claim"
    )]
    ClaimClash(String),
    #[error("the token could not be signed")]
    Sign,
}

/// What a minted token says: the subject (under `auth.user_claim`), its lifetime, and the
/// optional claims a login backend would add.
#[derive(Clone, Copy, Debug)]
pub struct MintClaims<'a> {
    pub sub: &'a str,
    /// `auth.admin_claim = auth.admin_value`.
    pub admin: bool,
    pub ttl: Duration,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    /// Written to `auth.plan_claim`.
    pub plan: Option<&'a str>,
}

/// Mint an HS256 token for trials (`tollgate token`): the subject under `cfg.user_claim`, `iat`,
/// `exp = now + ttl`, `cfg.admin_claim = cfg.admin_value` when `admin`, `email`/`name` when
/// given, and `iss`/`aud` when configured.
pub fn mint(
    secret: &Secret,
    cfg: &AuthConfig,
    sub: &str,
    admin: bool,
    ttl: Duration,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<String, MintError> {
    mint_claims(
        secret,
        cfg,
        &MintClaims {
            sub,
            admin,
            ttl,
            email,
            name,
            plan: None,
        },
    )
}

/// [`mint`] with every claim it can write, the plan (`cfg.plan_claim`) included.
pub fn mint_claims(
    secret: &Secret,
    cfg: &AuthConfig,
    c: &MintClaims<'_>,
) -> Result<String, MintError> {
    if c.sub.trim().is_empty() {
        return Err(MintError::EmptySubject);
    }
    if c.ttl.as_secs() == 0 {
        return Err(MintError::BadTtl);
    }
    let now = system_clock();
    let mut claims = Map::new();
    let mut put = |claim: &str, value: Value| {
        if claims.insert(claim.to_owned(), value).is_some() {
            return Err(MintError::ClaimClash(claim.to_owned()));
        }
        Ok(())
    };
    put("iat", now.into())?;
    put("exp", now.saturating_add(c.ttl.as_secs()).into())?;
    put(&cfg.user_claim, c.sub.into())?;
    if c.admin {
        put(&cfg.admin_claim, cfg.admin_value.as_str().into())?;
    }
    if let Some(plan) = c.plan {
        put(&cfg.plan_claim, plan.into())?;
    }
    if let Some(email) = c.email {
        put("email", email.into())?;
    }
    if let Some(name) = c.name {
        put("name", name.into())?;
    }
    if let Some(iss) = &cfg.issuer {
        put("iss", iss.as_str().into())?;
    }
    if let Some(aud) = &cfg.audience {
        put("aud", aud.as_str().into())?;
    }
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|_| MintError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;
    use crate::auth::testkit::*;
    use crate::auth::verify::b64;

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let cfg = AuthConfig {
            issuer: Some("iss-1".into()),
            audience: Some("aud-1".into()),
            ..AuthConfig::default()
        };
        let token = mint(
            &Secret::new(SECRET),
            &cfg,
            "u-7",
            true,
            Duration::from_secs(3600),
            Some("u7@example.com"),
            Some("Ursula"),
        )
        .unwrap();
        let v = Verifier::new(&cfg, Some(&Secret::new(SECRET)), None).unwrap();
        let caller = v.verify(&token).unwrap();
        assert_eq!(&*caller.user_id, "u-7");
        assert!(caller.is_admin);
        assert_eq!(caller.email.as_deref(), Some("u7@example.com"));
        assert_eq!(caller.name.as_deref(), Some("Ursula"));
        let claims: Value =
            serde_json::from_slice(&b64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 3600);
        assert_eq!(claims["iss"], "iss-1");
        assert_eq!(claims["aud"], "aud-1");
    }

    #[test]
    fn a_minted_token_without_admin_has_no_admin_claim() {
        let token = mint(
            &Secret::new(SECRET),
            &AuthConfig::default(),
            "u",
            false,
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        let claims: Value =
            serde_json::from_slice(&b64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(claims.get("role").is_none());
    }

    #[test]
    fn mint_refuses_bad_requests() {
        let s = Secret::new(SECRET);
        let d = AuthConfig::default();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            mint(&s, &d, " ", false, hour, None, None),
            Err(MintError::EmptySubject)
        ));
        assert!(matches!(
            mint(&s, &d, "u", false, Duration::from_millis(500), None, None),
            Err(MintError::BadTtl)
        ));
        let clash = AuthConfig {
            admin_claim: "sub".into(),
            ..AuthConfig::default()
        };
        assert!(
            matches!(mint(&s, &clash, "u", true, hour, None, None), Err(MintError::ClaimClash(c)) if c == "sub")
        );
    }

    #[test]
    fn a_minted_plan_goes_to_the_plan_claim() {
        let cfg = AuthConfig {
            plan_claim: "tier".into(),
            ..AuthConfig::default()
        };
        let token = mint_claims(
            &Secret::new(SECRET),
            &cfg,
            &MintClaims {
                sub: "u",
                admin: false,
                ttl: Duration::from_secs(60),
                email: None,
                name: None,
                plan: Some("pro"),
            },
        )
        .unwrap();
        let caller = Verifier::new(&cfg, Some(&Secret::new(SECRET)), None)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(caller.plan.as_deref().map(|p| &*p[0]), Some("pro"));
    }
}
