//! JWT attacks end to end: every forged, expired, misdirected or garbage credential gets 401 in
//! the provider's error shape, and the upstream is never contacted.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name),
    )
    .unwrap()
}

/// Send `token` both ways (OpenAI bearer, Gemini header) and expect 401 each time.
async fn assert_refused(h: &Harness, token: &str, why: &str) {
    h.mock.forbid(token);
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(token)
        .body(r#"{"model":"gpt-4o","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "{why}: OpenAI route");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key", "{why}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{why}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        !token.is_empty() && !msg.contains(token),
        "{why}: the message never echoes the token"
    );

    let resp = h
        .client
        .post(h.url("/gemini/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "{why}: Gemini route");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED", "{why}");
    assert_eq!(v["error"]["code"], 401, "{why}");
    assert_eq!(h.mock.hits(), 0, "{why}: nothing reaches the upstream");
}

#[tokio::test]
async fn forged_and_invalid_hs256_tokens_are_refused_before_the_upstream() {
    let mut h = Harness::start().await;
    let good = hs256(
        json!({"sub":"mallory","exp": now() + 600}),
        JWT_SECRET.as_bytes(),
    );

    // Tampered signature: flip one character of the signature.
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_refused(
        &h,
        std::str::from_utf8(&tampered).unwrap(),
        "tampered signature",
    )
    .await;

    // Tampered claims, original signature.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = b64(json!({"sub":"admin","exp": now() + 600})
        .to_string()
        .as_bytes());
    assert_refused(
        &h,
        &format!("{}.{}.{}", parts[0], forged_claims, parts[2]),
        "tampered claims",
    )
    .await;

    // alg: none, with and without an empty signature.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64(json!({"sub":"mallory","exp": now() + 600})
        .to_string()
        .as_bytes());
    assert_refused(&h, &format!("{none_header}.{claims}."), "alg none").await;
    assert_refused(
        &h,
        &format!("{none_header}.{claims}"),
        "alg none, two parts",
    )
    .await;

    // Wrong secret.
    assert_refused(
        &h,
        &hs256(
            json!({"sub":"m","exp": now() + 600}),
            b"another-secret-entirely-0123456789",
        ),
        "wrong secret",
    )
    .await;
    // Expired (beyond the leeway), not yet valid, no exp at all.
    assert_refused(
        &h,
        &hs256(
            json!({"sub":"m","exp": now() - 3600}),
            JWT_SECRET.as_bytes(),
        ),
        "expired",
    )
    .await;
    assert_refused(
        &h,
        &hs256(
            json!({"sub":"m","exp": now() + 7200, "nbf": now() + 3600}),
            JWT_SECRET.as_bytes(),
        ),
        "not yet valid",
    )
    .await;
    assert_refused(
        &h,
        &hs256(json!({"sub":"m"}), JWT_SECRET.as_bytes()),
        "no exp",
    )
    .await;
    // No user claim.
    assert_refused(
        &h,
        &hs256(json!({"exp": now() + 600}), JWT_SECRET.as_bytes()),
        "no sub",
    )
    .await;
    // Garbage.
    for garbage in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "Bearer",
        "🙂.🙂.🙂",
    ] {
        assert_refused(&h, garbage, garbage).await;
    }
    // No credential at all.
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(h.mock.hits(), 0);

    h.stop().await;
    assert!(
        h.rows().is_empty(),
        "an unauthenticated call names no user and leaves no usage row"
    );
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused_when_configured() {
    let h = Harness::start_with(|c| {
        c.auth.issuer = Some("https://login.example".into());
        c.auth.audience = Some("interview-app".into());
    })
    .await;
    let secret = JWT_SECRET.as_bytes();
    let exp = now() + 600;
    assert_refused(
        &h,
        &hs256(
            json!({"sub":"m","exp":exp,"iss":"https://evil.example","aud":"interview-app"}),
            secret,
        ),
        "wrong iss",
    )
    .await;
    assert_refused(
        &h,
        &hs256(
            json!({"sub":"m","exp":exp,"iss":"https://login.example","aud":"other-app"}),
            secret,
        ),
        "wrong aud",
    )
    .await;
    assert_refused(
        &h,
        &hs256(json!({"sub":"m","exp":exp}), secret),
        "missing iss/aud",
    )
    .await;

    h.mock
        .push(Reply::json(200, r#"{"object":"list","data":[]}"#));
    let ok = hs256(
        json!({"sub":"m","exp":exp,"iss":"https://login.example","aud":"interview-app"}),
        secret,
    );
    let resp = h
        .client
        .get(h.url("/openai/v1/models"))
        .bearer_auth(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the right issuer and audience pass");
}

#[tokio::test]
async fn rs256_only_gateway_refuses_hs256_signed_with_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("rsa_public.pem");
    std::fs::write(&pubkey, key("rsa_public.pem")).unwrap();
    let h = Harness::start_with(|c| {
        c.auth.algorithms = vec![tollgate::config::JwtAlgorithm::RS256];
        c.auth.public_key_file = Some(pubkey.clone());
    })
    .await;
    let exp = now() + 600;
    // HS/RS confusion: an HS256 token whose HMAC key is the RSA public key's PEM bytes.
    let confused = hs256(json!({"sub":"m","exp":exp}), &key("rsa_public.pem"));
    assert_refused(&h, &confused, "HS/RS confusion").await;
    // A plain HS256 token with the shared secret is not accepted either: only RS256 is configured.
    assert_refused(
        &h,
        &hs256(json!({"sub":"m","exp":exp}), JWT_SECRET.as_bytes()),
        "HS256 when only RS256",
    )
    .await;
    // An ES256 token.
    let es = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub":"m","exp":exp}),
        &EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
    )
    .unwrap();
    assert_refused(&h, &es, "ES256 when only RS256").await;

    // The genuine RS256 token passes.
    h.mock
        .push(Reply::json(200, r#"{"object":"list","data":[]}"#));
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub":"rsa-user","exp":exp}),
        &EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap(),
    )
    .unwrap();
    h.mock.forbid(&rs);
    let resp = h
        .client
        .get(h.url("/openai/v1/models"))
        .bearer_auth(&rs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
}
