//! Who may use the admin side, and how they prove it.
//!
//! Two ways in, checked on every `/api/admin/` route except sign-in:
//! - a dashboard session: `POST /api/admin/login` with an admin account's name and password
//!   (argon2id hashes made by `tollgate admin add`) sets an `HttpOnly; SameSite=Strict` cookie
//!   holding a random 256-bit token; the database keeps only its SHA-256 and expiry;
//! - `Authorization: Bearer <JWT>` verified like a proxy caller's, whose `auth.admin_claim`
//!   holds `auth.admin_value` (for scripts). A valid JWT without the claim gets 403.
//!
//! Sign-in attempts are rate limited per client address and per account name (governor), and
//! every attempt — good or bad — is audited in the transaction that makes the session. Requests
//! that change state are POST/PUT only and must not come from a foreign origin: a browser
//! always sends `Origin` (or `Sec-Fetch-Site`) on them, and a mismatch with `Host` is refused
//! with 403 before any handler runs. Passwords, tokens and hashes never reach a log or a body.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AdminState, ApiError, now_ms};
use crate::config::Config;
use crate::store::{Committed, Op, Work};

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_admin";
/// Longest account name and password accepted (argon2 hashes whatever it gets; bound it).
const MAX_NAME_BYTES: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password `tollgate admin add` accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;

// === passwords ===

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash nobody's password matches, verified for unknown names so that a wrong name takes as
/// long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never valid").unwrap_or_default())
}

/// Check an account name for `tollgate admin add`.
pub fn valid_account_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("an account name has 1 to {MAX_NAME_BYTES} bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("an account name uses letters, digits and . _ - @ only".into());
    }
    Ok(())
}

// === the signed-in caller ===

/// The admin a request comes from; every admin handler gets it as an extension.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Who goes in the audit trail: the account name, or `jwt:<subject>`.
    pub actor: String,
    /// When the session expires (unix ms); `None` for a bearer JWT.
    pub expires_at: Option<i64>,
}

/// Sign-in state shared by the handlers: the rate limiters. (Admin JWTs are checked by the
/// configuration's verifier, `Config::verifier`.)
pub(crate) struct Sessions {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_name: DefaultKeyedRateLimiter<String>,
}

impl Sessions {
    pub(crate) fn new(config: &Config) -> Sessions {
        let per_minute =
            NonZeroU32::new(config.raw.admin.login_attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute);
        Sessions {
            per_ip: RateLimiter::keyed(quota),
            per_name: RateLimiter::keyed(quota),
        }
    }

    /// Take one sign-in attempt from the address's and the name's allowance; `Err(seconds)`
    /// to wait when either is used up.
    fn allow_attempt(&self, ip: IpAddr, name: &str) -> Result<(), u64> {
        let clock = governor::clock::DefaultClock::default();
        let wait = |not_until: governor::NotUntil<_>| {
            use governor::clock::Clock;
            not_until.wait_time_from(clock.now()).as_secs().max(1)
        };
        // Bound the limiters' memory: forget keys whose allowance is full again.
        if self.per_ip.len() > 10_000 {
            self.per_ip.retain_recent();
        }
        if self.per_name.len() > 10_000 {
            self.per_name.retain_recent();
        }
        self.per_ip.check_key(&ip).map_err(wait)?;
        self.per_name.check_key(&name.to_string()).map_err(wait)?;
        Ok(())
    }
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who the request comes from: a bearer admin JWT, else a live session cookie.
async fn authenticate(state: &Arc<AdminState>, headers: &HeaderMap) -> Result<Admin, ApiError> {
    if let Some(token) = bearer(headers) {
        let config = state.config();
        let caller = config
            .verifier
            .verify_with_refresh(token)
            .await
            .map_err(|e| ApiError::unauthorized(format!("the bearer token was refused: {e}")))?;
        if !caller.is_admin {
            return Err(ApiError::forbidden(
                "this token is valid but does not carry the admin claim",
            ));
        }
        return Ok(Admin {
            actor: format!("jwt:{}", caller.user_id),
            expires_at: None,
        });
    }
    let Some(token) = session_token(headers) else {
        return Err(ApiError::unauthorized(
            "sign in (POST /api/admin/login) or send an admin bearer token",
        ));
    };
    let digest = sha256_hex(token);
    match state.store.session(&digest, now_ms()).await? {
        Some(session) => Ok(Admin {
            actor: session.admin,
            expires_at: Some(session.expires_at),
        }),
        None => Err(ApiError::unauthorized(
            "the session has expired or was ended; sign in again",
        )),
    }
}

/// Middleware for every admin route behind sign-in: puts the [`Admin`] in the request's
/// extensions, or answers 401/403.
pub(crate) async fn require_admin(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match authenticate(&state, req.headers()).await {
        Ok(admin) => {
            req.extensions_mut().insert(admin);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Middleware for every route: a state-changing request from a foreign origin gets 403.
///
/// Browsers send `Origin` on every POST/PUT (and `Sec-Fetch-Site`): it must name this host.
/// A request with neither comes from a script, which CSRF cannot forge.
pub(crate) async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Err(e) = check_same_origin(req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|rest| rest.trim_end_matches('/'));
        return match (authority, host) {
            (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "cross-origin request refused (Origin {origin:?} is not this admin host)"
            ))),
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin" | "none") => Ok(()),
        Some(other) => Err(ApiError::forbidden(format!(
            "cross-site request refused (Sec-Fetch-Site: {other})"
        ))),
    }
}

// === sign-in and sign-out ===

/// `POST /api/admin/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Who is signed in and until when.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The account name, or `jwt:<subject>` for a bearer token.
    pub admin: String,
    /// When the session ends (unix ms); absent for a bearer token.
    pub expires_at: Option<i64>,
}

/// Sign in with an admin account: sets the session cookie.
#[utoipa::path(
    post, path = "/api/admin/login", tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionInfo),
        (status = 400, description = "Malformed body", body = super::ErrorBody),
        (status = 401, description = "Wrong name or password", body = super::ErrorBody),
        (status = 403, description = "Cross-origin request", body = super::ErrorBody),
        (status = 429, description = "Too many attempts", body = super::ErrorBody),
    )
)]
pub(crate) async fn login(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<super::JsonObject<LoginRequest>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(super::JsonObject(body)) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    if body.username.len() > MAX_NAME_BYTES || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unauthorized("wrong account name or password"));
    }
    if let Err(wait) = state.sessions.allow_attempt(peer.ip(), &body.username) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many sign-in attempts; wait before trying again",
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let config = state.config();
    let ttl_ms =
        i64::try_from(config.raw.admin.session_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let secure = secure_cookie(&state, &headers);
    let token = new_token()?;
    let digest = sha256_hex(&token);
    let name = body.username;
    let signed_in_as = name.clone();
    let password = body.password;
    let ip = peer.ip().to_string();
    let hash = state.store.password_hash(&name).await?;
    // Verify even for an unknown name, so both failures take as long; argon2 is CPU work, off
    // the async runtime.
    let ok = tokio::task::spawn_blocking(move || {
        verify_password(hash.as_deref().unwrap_or(decoy_hash()), &password) && hash.is_some()
    })
    .await
    .map_err(|e| ApiError::internal(format!("password check failed: {e}")))?;
    let now = now_ms();
    let expires_at = now.saturating_add(ttl_ms);
    let op = if ok {
        Op::SignIn {
            token_sha256: digest,
            expires_at_ms: expires_at,
            from: ip,
        }
    } else {
        Op::SignInFailed { from: ip }
    };
    state
        .store
        .commit(Work {
            actor: name,
            at_ms: now,
            op,
        })
        .await?;
    if !ok {
        return Err(ApiError::unauthorized("wrong account name or password"));
    }
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        config.raw.admin.session_ttl_secs,
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Json(SessionInfo {
        admin: signed_in_as,
        expires_at: Some(expires_at),
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Whether the session cookie is `Secure`: when the admin listener itself speaks HTTPS
/// (`[admin.tls]`), or a proxy in front of it says the browser used HTTPS.
fn secure_cookie(state: &AdminState, headers: &HeaderMap) -> bool {
    state.https
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// End the session: the cookie is cleared and the session deleted.
#[utoipa::path(
    post, path = "/api/admin/logout", tag = "session",
    responses(
        (status = 204, description = "Signed out (also when there was no session)"),
        (status = 403, description = "Cross-origin request", body = super::ErrorBody),
    )
)]
pub(crate) async fn logout(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let secure = secure_cookie(&state, &headers);
    if let Some(token) = session_token(&headers) {
        let signed_out = state
            .store
            .commit(Work {
                // The audit row's actor is the session's admin, whom the store finds.
                actor: String::new(),
                at_ms: now_ms(),
                op: Op::SignOut {
                    token_sha256: sha256_hex(token),
                },
            })
            .await?;
        debug_assert!(matches!(signed_out, Committed::SignedOut { .. }));
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(if secure {
            "tollgate_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        } else {
            "tollgate_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        }),
    );
    Ok(resp)
}

/// Who is signed in (the dashboard's session check).
#[utoipa::path(
    get, path = "/api/admin/me", tag = "session",
    responses(
        (status = 200, description = "The signed-in admin", body = SessionInfo),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "A JWT without the admin claim", body = super::ErrorBody),
    ),
    security(("session" = []), ("bearer" = []))
)]
pub(crate) async fn me(axum::Extension(admin): axum::Extension<Admin>) -> Json<SessionInfo> {
    Json(SessionInfo {
        admin: admin.actor,
        expires_at: admin.expires_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(!verify_password("not a phc string", "x"));
        // Salted: the same password hashes differently.
        assert_ne!(hash, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_admin=abc ; b=2"),
        );
        assert_eq!(session_token(&h), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("tollgate_admin="));
        assert_eq!(session_token(&h), None);
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3001"));
        assert!(check_same_origin(&h).is_ok(), "scripts send neither header");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:3001"),
        );
        assert!(check_same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(
            check_same_origin(&h).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_same_origin(&h).is_ok());
    }

    #[test]
    fn account_names_are_checked() {
        assert!(valid_account_name("ops.admin@corp").is_ok());
        assert!(valid_account_name("").is_err());
        assert!(valid_account_name("a b").is_err());
        assert!(valid_account_name(&"x".repeat(65)).is_err());
    }
}
