//! The admin side on real sockets: a gateway started in-process against the mock upstream, its
//! admin listener on 127.0.0.1:0, calls through the proxy for real usage rows, and the admin API
//! called with reqwest as a dashboard or a script would.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Backend, Harness, Reply, fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::admin::AdminServer;

type AuditRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A gateway with its admin side.
struct Admin {
    h: Harness,
    server: Option<AdminServer>,
    base: String,
    /// A client that keeps cookies, like a browser.
    browser: reqwest::Client,
    client: reqwest::Client,
}

impl Admin {
    async fn start_on(
        backend: Backend,
        tweak: impl FnOnce(&mut tollgate::config::RawConfig),
    ) -> Admin {
        Admin::around(Harness::start_on(backend, tweak).await).await
    }

    /// The admin side of a gateway already started.
    async fn around(h: Harness) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = tollgate::admin::start(h.running.as_ref().unwrap().admin_handles(), listener)
            .await
            .unwrap();
        let base = format!("http://{}", server.addr);
        Admin {
            h,
            server: Some(server),
            base,
            browser: reqwest::Client::builder()
                .no_proxy()
                .cookie_store(true)
                .build()
                .unwrap(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn admin_token(&self) -> String {
        common::process::admin_jwt(&self.h.raw)
    }

    /// `GET path` as a script with an admin bearer token.
    async fn get_response(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.get_response(path).await;
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(self.admin_token());
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn add_account(&self, name: &str, password: &str) {
        let hash = tollgate::admin::hash_password(password).unwrap();
        assert!(!hash.contains('\'') && !name.contains('\''));
        self.h.exec(&format!(
            "INSERT INTO admin_accounts (name, password_hash, created_at) VALUES ('{name}', '{hash}', 1)"
        ));
    }

    /// Every audit row, oldest first: (actor, action, target, before_json, after_json).
    fn audit(&self) -> Vec<AuditRow> {
        self.h
            .text_rows(
                "SELECT actor, action, target, before_json, after_json FROM admin_audit ORDER BY id",
            )
            .into_iter()
            .map(|mut r| {
                let text = |v: &mut Option<String>| v.take();
                let actor = text(&mut r[0]).unwrap();
                let action = text(&mut r[1]).unwrap();
                (actor, action, text(&mut r[2]), text(&mut r[3]), text(&mut r[4]))
            })
            .collect()
    }

    /// One chat completion for `user` through the proxy; returns its status.
    async fn call(&self, user: &str) -> StatusCode {
        self.h
            .mock
            .push(Reply::json(200, fixture("openai/chat.json")));
        let jwt = self.h.token(user);
        self.h
            .post_openai(
                "/openai/v1/chat/completions",
                &jwt,
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
            )
            .await
            .status()
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.h.stop().await;
    }
}

/// The tokens one `openai/chat.json` call records (input + output), read from the fixture.
fn fixture_tokens() -> i64 {
    let v: Value = serde_json::from_slice(&fixture("openai/chat.json")).unwrap();
    v["usage"]["total_tokens"].as_i64().unwrap()
}

const PROTECTED_GETS: &[&str] = &[
    "/api/admin/me",
    "/api/admin/users",
    "/api/admin/user/u1/usage",
    "/api/admin/stats",
    "/api/admin/usage/series",
    "/api/admin/usage.csv",
    "/api/admin/audit",
    "/api/admin/config",
    "/api/admin/openapi.json",
    "/metrics",
];

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

on_both_stores! {
    #[tokio::test]
    async fn every_endpoint_needs_an_admin_and_a_user_jwt_gets_403(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        let user_jwt = a.h.token("alice");
        for path in PROTECTED_GETS {
            let resp = a.client.get(a.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_error(&resp.json().await.unwrap(), "unauthorized");

            let resp = a
                .client
                .get(a.url(path))
                .bearer_auth(&user_jwt)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
            assert_error(&resp.json().await.unwrap(), "forbidden");

            let resp = a
                .client
                .get(a.url(path))
                .bearer_auth("not.a.jwt")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");

            let resp = a.get_response(path).await;
            assert!(
                resp.status() == StatusCode::OK
                    || (*path == "/api/admin/user/u1/usage" && resp.status() == StatusCode::NOT_FOUND),
                "{path}: {}",
                resp.status()
            );
            assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
        }
        for (method, path) in [
            (reqwest::Method::POST, "/api/admin/user/u1/block"),
            (reqwest::Method::POST, "/api/admin/user/u1/unblock"),
            (reqwest::Method::PUT, "/api/admin/user/u1/limits"),
            (reqwest::Method::POST, "/api/admin/reload"),
        ] {
            let resp = a
                .client
                .request(method.clone(), a.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
            let resp = a
                .client
                .request(method, a.url(path))
                .bearer_auth(&user_jwt)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        }
        // Nothing was changed by the refused calls.
        assert!(a.audit().is_empty(), "{:?}", a.audit());
        // Health and readiness need nothing.
        for path in ["/healthz", "/readyz"] {
            let resp = a.client.get(a.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn get_on_a_mutation_is_405_and_unknown_paths_404(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        for path in [
            "/api/admin/user/u1/block",
            "/api/admin/user/u1/unblock",
            "/api/admin/user/u1/limits",
            "/api/admin/login",
            "/api/admin/reload",
        ] {
            let (status, body) = a.get(path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_error(&body, "method_not_allowed");
        }
        // No endpoint edits or deletes audit rows.
        for method in [
            reqwest::Method::DELETE,
            reqwest::Method::PUT,
            reqwest::Method::POST,
        ] {
            let (status, _) = a.send(method, "/api/admin/audit", Some(json!({}))).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        }
        let (status, body) = a.get("/api/admin/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error(&body, "not_found");
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it_all_audited(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        a.add_account("root", "a long enough password");

        // Wrong password, unknown account: 401, audited as failures.
        for (user, pass) in [
            ("root", "wrong password!!"),
            ("nobody", "a long enough password"),
        ] {
            let resp = a
                .browser
                .post(a.url("/api/admin/login"))
                .json(&json!({"username": user, "password": pass}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert!(resp.headers().get("set-cookie").is_none());
            assert_error(&resp.json().await.unwrap(), "unauthorized");
        }
        let resp = a.browser.get(a.url("/api/admin/me")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

        let resp = a
            .browser
            .post(a.url("/api/admin/login"))
            .json(&json!({"username": "root", "password": "a long enough password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("tollgate_admin="), "{cookie}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(attr), "{attr} missing: {cookie}");
        }
        assert!(
            !cookie.contains("Secure"),
            "plain HTTP on loopback: {cookie}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["admin"], "root");

        let me: Value = a
            .browser
            .get(a.url("/api/admin/me"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["admin"], "root");
        assert!(me["expires_at"].as_i64().unwrap() > jiff::Timestamp::now().as_millisecond());
        // The session works for the API.
        let resp = a
            .browser
            .get(a.url("/api/admin/stats"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Only the token's hash is stored.
        let token = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("tollgate_admin=")
            .to_string();
        let stored: String = a.h.text_rows("SELECT token_sha256 FROM admin_sessions")[0][0]
            .clone()
            .unwrap();
        assert_ne!(stored, token);
        assert_eq!(stored.len(), 64);

        let resp = a
            .browser
            .post(a.url("/api/admin/logout"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(
            resp.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        // The old cookie is dead even if a client kept it.
        let resp = a
            .client
            .get(a.url("/api/admin/me"))
            .header("cookie", format!("tollgate_admin={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

        let actions: Vec<(String, String)> = a.audit().into_iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            actions,
            [
                ("root".to_string(), "login_failed".to_string()),
                ("nobody".into(), "login_failed".into()),
                ("root".into(), "login".into()),
                ("root".into(), "logout".into()),
            ]
        );
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn sign_in_attempts_are_rate_limited(backend: Backend) {
        let a = Admin::start_on(backend, |raw| raw.admin.login_attempts_per_minute = 3).await;
        a.add_account("root", "a long enough password");
        let attempt = |pass: &'static str| {
            a.client
                .post(a.url("/api/admin/login"))
                .json(&json!({"username": "root", "password": pass}))
                .send()
        };
        for _ in 0..3 {
            assert_eq!(
                attempt("bad password....").await.unwrap().status(),
                StatusCode::UNAUTHORIZED
            );
        }
        // Even the right password is refused until the allowance refills.
        let resp = attempt("a long enough password").await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_error(&resp.json().await.unwrap(), "rate_limited");
        // Refused attempts never reached the password check: three failures audited, no more.
        assert_eq!(a.audit().len(), 3);
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn a_foreign_origin_cannot_change_anything(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        a.add_account("root", "a long enough password");
        let resp = a
            .browser
            .post(a.url("/api/admin/login"))
            .header("origin", a.base.clone())
            .json(&json!({"username": "root", "password": "a long enough password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "same-origin sign-in works");

        for (origin, site) in [
            (Some("http://evil.example"), None),
            (None, Some("cross-site")),
        ] {
            let mut req = a.browser.post(a.url("/api/admin/user/victim/block"));
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(s) = site {
                req = req.header("sec-fetch-site", s);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            assert_error(&resp.json().await.unwrap(), "forbidden");
            let resp = a
                .browser
                .put(a.url("/api/admin/user/victim/limits"))
                .header("origin", "http://evil.example")
                .json(&json!({"daily_tokens": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        }
        // A foreign page cannot even sign in (login CSRF).
        let resp = a
            .client
            .post(a.url("/api/admin/login"))
            .header("origin", "http://evil.example")
            .json(&json!({"username": "root", "password": "a long enough password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!a.h.ledger().controls("victim").blocked);
        // Same origin with the session: allowed.
        let resp = a
            .browser
            .post(a.url("/api/admin/user/victim/block"))
            .header("origin", a.base.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(a.h.ledger().controls("victim").blocked);
        let actions: Vec<String> = a.audit().into_iter().map(|r| r.1).collect();
        assert_eq!(actions, ["login", "block"]);
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn block_through_the_api_refuses_the_users_next_call_and_unblock_restores_it(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        assert_eq!(a.call("mallory").await, StatusCode::OK);

        let (status, body) = a
            .send(
                reqwest::Method::POST,
                "/api/admin/user/mallory/block",
                Some(json!({"reason": "abuse"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["after"]["blocked"], true);
        assert_eq!(body["after"]["blocked_reason"], "abuse");
        assert_eq!(body["before"]["blocked"], false);

        let hits = a.h.mock.hits();
        let jwt = a.h.token("mallory");
        let resp =
            a.h.post_openai(
                "/openai/v1/chat/completions",
                &jwt,
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"]["message"].is_string(),
            "OpenAI error shape: {err}"
        );
        assert_eq!(
            a.h.mock.hits(),
            hits,
            "nothing forwarded for a blocked user"
        );
        // Another user is unaffected.
        assert_eq!(a.call("alice").await, StatusCode::OK);

        let (status, body) = a
            .send(
                reqwest::Method::POST,
                "/api/admin/user/mallory/unblock",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["after"]["blocked"], false);
        assert_eq!(body["after"]["blocked_reason"], Value::Null);
        assert_eq!(a.call("mallory").await, StatusCode::OK);

        let audit = a.audit();
        assert_eq!(audit.len(), 2);
        assert_eq!(
            (
                audit[0].0.as_str(),
                audit[0].1.as_str(),
                audit[0].2.as_deref()
            ),
            ("jwt:ops", "block", Some("mallory"))
        );
        let before: Value = serde_json::from_str(audit[0].3.as_deref().unwrap()).unwrap();
        let after: Value = serde_json::from_str(audit[0].4.as_deref().unwrap()).unwrap();
        assert_eq!(before["blocked"], false);
        assert_eq!(after["blocked"], true);
        assert_eq!(audit[1].1, "unblock");
        // The block survives a restart of the gateway (it is in the store, not only in memory).
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn a_limit_change_judges_the_next_call_and_null_clears_it(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        assert_eq!(a.call("bob").await, StatusCode::OK);
        a.h.wait_rows(1).await;

        // Below what bob already used today: his next call is refused before forwarding.
        let (status, body) = a
            .send(
                reqwest::Method::PUT,
                "/api/admin/user/bob/limits",
                Some(json!({"daily_tokens": 10})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["after"]["overrides"]["daily_tokens"], 10);
        assert_eq!(body["limits"]["daily_tokens"], 10);
        let hits = a.h.mock.hits();
        assert_eq!(a.call("bob").await, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.h.mock.hits(), hits);

        // A cost budget in USD is stored in nano-USD; other fields stay as they were.
        let (status, body) = a
            .send(
                reqwest::Method::PUT,
                "/api/admin/user/bob/limits",
                Some(json!({"monthly_cost_usd": 1.5})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["after"]["overrides"]["monthly_cost_nano_usd"],
            1_500_000_000u64
        );
        assert_eq!(body["after"]["overrides"]["daily_tokens"], 10);

        // null clears the override: back to the default, and the call goes through.
        let (status, body) = a
            .send(
                reqwest::Method::PUT,
                "/api/admin/user/bob/limits",
                Some(json!({"daily_tokens": null})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["after"]["overrides"]["daily_tokens"], Value::Null);
        assert_eq!(a.call("bob").await, StatusCode::OK);

        // Bad values change nothing.
        for (bad, code) in [
            (
                json!({"daily_tokens": -1}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json!({"daily_tokens": "lots"}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json!({"requests_per_minute": 0}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json!({"daily_cost_usd": -2.0}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json!({"weekly_tokens": 5}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ] {
            let (status, body) = a
                .send(
                    reqwest::Method::PUT,
                    "/api/admin/user/bob/limits",
                    Some(bad.clone()),
                )
                .await;
            assert_eq!(status, code, "{bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        }
        let resp = a
            .client
            .put(a.url("/api/admin/user/bob/limits"))
            .bearer_auth(a.admin_token())
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

        let actions: Vec<String> = a.audit().into_iter().map(|r| r.1).collect();
        assert_eq!(actions, ["set_limits", "set_limits", "set_limits"]);
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn users_stats_usage_series_and_csv_report_the_recorded_calls(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        for user in ["alice", "alice", "alice", "bob", "carol"] {
            assert_eq!(a.call(user).await, StatusCode::OK);
        }
        a.h.wait_rows(5).await;
        let t = fixture_tokens();

        // Users, sorted by this month's tokens.
        let (status, page) = a
            .get("/api/admin/users?sort=tokens_month&order=desc&limit=2")
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 3);
        let users = page["users"].as_array().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0]["id"], "alice");
        assert_eq!(users[0]["today"]["total_tokens"], 3 * t);
        assert_eq!(users[0]["month"]["calls"], 3);
        assert_eq!(users[0]["blocked"], false);
        assert_eq!(
            users[0]["limits"]["daily_tokens"],
            a.h.raw.limits.daily_tokens
        );
        assert!(users[0]["last_seen_at"].as_i64().is_some());
        let (_, next) = a
            .get("/api/admin/users?sort=tokens_month&order=desc&limit=2&offset=2")
            .await;
        assert_eq!(next["users"].as_array().unwrap().len(), 1);
        let (_, found) = a.get("/api/admin/users?search=CAR").await;
        assert_eq!(found["total"], 1);
        assert_eq!(found["users"][0]["id"], "carol");
        let (status, body) = a.get("/api/admin/users?limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&body, "invalid_request");
        let (status, _) = a.get("/api/admin/users?sort=shoe_size").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Stats.
        let (status, stats) = a.get("/api/admin/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["users_total"], 3);
        assert_eq!(stats["users_active_today"], 3);
        assert_eq!(stats["users_blocked"], 0);
        assert_eq!(stats["today"]["calls"], 5);
        assert_eq!(stats["today"]["total_tokens"], 5 * t);
        assert_eq!(stats["month"]["total_tokens"], 5 * t);
        assert!(stats["today"]["cost_nano_usd"].as_i64().unwrap() > 0);
        assert_eq!(stats["estimated_share_today"], 0.0);

        // One user's usage.
        let (status, usage) = a.get("/api/admin/user/alice/usage?days=7&limit=2").await;
        assert_eq!(status, StatusCode::OK, "{usage}");
        assert_eq!(usage["daily"].as_array().unwrap().len(), 7);
        let today = usage["daily"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            today["totals"]["calls"]
                .as_i64()
                .or(today["calls"].as_i64()),
            Some(3),
            "{today}"
        );
        assert_eq!(usage["calls"].as_array().unwrap().len(), 2);
        let first = &usage["calls"][0];
        assert_eq!(first["status"], 200);
        assert_eq!(first["usage_source"], "reported");
        assert!(first["latency_ms"].as_i64().is_some());
        let cursor = usage["next_cursor"].as_i64().unwrap();
        let (_, rest) = a
            .get(&format!(
                "/api/admin/user/alice/usage?days=7&limit=2&cursor={cursor}"
            ))
            .await;
        assert_eq!(rest["calls"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_cursor"], Value::Null);
        let ids: Vec<i64> = usage["calls"]
            .as_array()
            .unwrap()
            .iter()
            .chain(rest["calls"].as_array().unwrap())
            .map(|c| c["id"].as_i64().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "newest first, no overlap: {ids:?}"
        );
        let fixture_model =
            serde_json::from_slice::<Value>(&fixture("openai/chat.json")).unwrap()["model"].clone();
        assert_eq!(
            usage["models"][0]["model"], fixture_model,
            "the model the answer named"
        );
        assert_eq!(usage["quota"]["day"]["used_tokens"], 3 * t);
        let (status, _) = a.get("/api/admin/user/alice/usage?days=5").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = a.get("/api/admin/user/nobody/usage").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error(&body, "not_found");

        // Series.
        let (status, series) = a.get("/api/admin/usage/series?days=7&by=provider").await;
        assert_eq!(status, StatusCode::OK, "{series}");
        let points = series["points"].as_array().unwrap();
        let openai: i64 = points
            .iter()
            .filter(|p| p["key"] == "openai")
            .map(|p| p["totals"]["total_tokens"].as_i64().unwrap())
            .sum();
        assert_eq!(openai, 5 * t);

        // CSV: a header and one line per call.
        let resp = a.get_response("/api/admin/usage.csv").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(
            resp.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let text = resp.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[0].contains("request_id") && lines[0].contains("total_tokens"),
            "{}",
            lines[0]
        );
        let resp = a.get_response("/api/admin/usage.csv?user=bob").await;
        assert_eq!(resp.text().await.unwrap().lines().count(), 2);
        let (status, _) = a.get("/api/admin/usage.csv?from=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn config_masks_secrets_and_openapi_describes_every_endpoint(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        let resp = a.get_response("/api/admin/config").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        for secret in [common::JWT_SECRET, common::OPENAI_KEY, common::GEMINI_KEY] {
            assert!(!text.contains(secret), "a secret leaked into /config");
        }
        let config: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            config["config"]["limits"]["daily_tokens"],
            a.h.raw.limits.daily_tokens
        );
        assert_eq!(config["secrets"]["OPENAI_API_KEY"], true);
        assert!(config["config"]["pricing"]["gpt-4o"].is_object());

        let (status, doc) = a.get("/api/admin/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/admin/users",
            "/api/admin/user/{id}/usage",
            "/api/admin/user/{id}/block",
            "/api/admin/user/{id}/unblock",
            "/api/admin/user/{id}/limits",
            "/api/admin/stats",
            "/api/admin/usage/series",
            "/api/admin/usage.csv",
            "/api/admin/audit",
            "/api/admin/config",
            "/api/admin/login",
            "/api/admin/logout",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        assert!(doc["paths"]["/api/admin/user/{id}/limits"]["put"].is_object());
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn audit_lists_actions_newest_first_filtered_by_target(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        for (path, body) in [
            ("/api/admin/user/u1/block", None),
            ("/api/admin/user/u2/block", Some(json!({"reason": "spam"}))),
            ("/api/admin/user/u1/unblock", None),
        ] {
            let (status, _) = a.send(reqwest::Method::POST, path, body).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, page) = a.get("/api/admin/audit").await;
        assert_eq!(status, StatusCode::OK);
        let actions: Vec<(&str, &str)> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            [("unblock", "u1"), ("block", "u2"), ("block", "u1")]
        );
        assert_eq!(page["entries"][1]["detail"], "spam");
        let (_, u1) = a.get("/api/admin/audit?target=u1&limit=1").await;
        assert_eq!(u1["entries"].as_array().unwrap().len(), 1);
        let cursor = u1["next_cursor"].as_i64().unwrap();
        let (_, older) = a
            .get(&format!("/api/admin/audit?target=u1&cursor={cursor}"))
            .await;
        assert_eq!(older["entries"][0]["action"], "block");
        assert_eq!(older["next_cursor"], Value::Null);
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn metrics_count_calls_for_an_admin(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        assert_eq!(a.call("alice").await, StatusCode::OK);
        a.h.wait_rows(1).await;
        let resp = a.get_response("/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = resp.text().await.unwrap();
        assert!(text.contains("tollgate_"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("tollgate_store_rows_dropped") && l.ends_with(" 0")),
            "{text}"
        );
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn reload_without_a_file_is_503_and_a_non_loopback_admin_needs_a_way_in(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        let (status, body) = a
            .send(reqwest::Method::POST, "/api/admin/reload", None)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_error(&body, "unavailable");

        let mut config = (*a.h.running.as_ref().unwrap().config()).clone();
        let public: std::net::SocketAddr = "0.0.0.0:3001".parse().unwrap();
        assert!(
            tollgate::admin::check_listen(public, &config, 1).is_ok(),
            "an account exists"
        );
        assert!(
            tollgate::admin::check_listen(public, &config, 0).is_ok(),
            "admin JWTs configured"
        );
        config.raw.auth.admin_claim = String::new();
        let err = tollgate::admin::check_listen(public, &config, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tollgate admin add"), "{err}");
        assert!(tollgate::admin::check_listen("127.0.0.1:3001".parse().unwrap(), &config, 0).is_ok());
        a.stop().await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn the_dashboard_is_served_at_the_root_and_its_routes_fall_back_to_it(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        let mut pages = Vec::new();
        for path in ["/", "/users/alice", "/audit"] {
            let resp = a.client.get(a.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers().clone();
            assert!(
                h["content-type"].to_str().unwrap().starts_with("text/html"),
                "{path}"
            );
            assert_eq!(h["cache-control"], "no-cache", "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{csp}"
            );
            assert_eq!(h["x-content-type-options"], "nosniff");
            pages.push(resp.text().await.unwrap());
        }
        assert!(
            pages.iter().all(|p| p == &pages[0]),
            "client routes get the same index.html"
        );
        assert!(pages[0].contains("<"), "an HTML page");
        // The API's own 404 stays JSON; a missing asset is not the app.
        let (status, body) = a.get("/api/admin/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error(&body, "not_found");
        let resp = a
            .client
            .get(a.url("/assets/missing-0000.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let resp = a.client.post(a.url("/users/alice")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        a.stop().await;
    }
}

#[tokio::test]
async fn reload_through_the_api_applies_a_valid_file_and_refuses_an_invalid_one_audited() {
    // The file watch is off so that only the API reloads here.
    let a =
        Admin::around(Harness::start_with_file(|raw| raw.server.watch_config = false).await).await;
    assert_eq!(a.call("dora").await, StatusCode::OK);

    let mut raw = a.h.raw.clone();
    raw.server.watch_config = false;
    raw.limits.daily_tokens = 5;
    a.h.write_config(&raw);
    let (status, body) = a
        .send(reqwest::Method::POST, "/api/admin/reload", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "applied", "{body}");
    assert!(
        body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "limits.daily_tokens" && c["after"] == 5),
        "{body}"
    );
    // The next call is judged by the new default.
    assert_eq!(a.call("dora").await, StatusCode::TOO_MANY_REQUESTS);
    let (_, config) = a.get("/api/admin/config").await;
    assert_eq!(config["config"]["limits"]["daily_tokens"], 5);

    // Unchanged file: nothing to do.
    let (status, body) = a
        .send(reqwest::Method::POST, "/api/admin/reload", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], "unchanged");

    a.h.write_config_text("[limits]\ndaily_tokens = \"lots\"\n");
    let (status, body) = a
        .send(reqwest::Method::POST, "/api/admin/reload", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily_tokens"),
        "{body}"
    );
    // The running configuration stayed.
    let (_, config) = a.get("/api/admin/config").await;
    assert_eq!(config["config"]["limits"]["daily_tokens"], 5);
    assert_eq!(a.call("dora").await, StatusCode::TOO_MANY_REQUESTS);

    let actions: Vec<(String, String)> = a.audit().into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        actions,
        [
            ("jwt:ops".to_string(), "config_reload".to_string()),
            ("jwt:ops".into(), "config_reload_refused".into()),
        ]
    );
    a.stop().await;
}

on_both_stores! {
    #[tokio::test]
    async fn a_rebound_dns_name_cannot_reach_the_admin_api(backend: Backend) {
        let a = Admin::start_on(backend, |_| {}).await;
        let port = a.server.as_ref().unwrap().addr.port();
        let url = a.url("/api/admin/stats");
        // A browser on a page of evil.example whose name now resolves to 127.0.0.1 sends this Host.
        let resp = a
            .client
            .get(&url)
            .header("host", "evil.example:3001")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 421);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "host_not_allowed");
        for path in ["/healthz", "/", "/api/admin/login"] {
            let resp = a
                .client
                .get(a.url(path))
                .header("host", "evil.example")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 421, "{path}");
        }
        // Addressed by IP or localhost, it answers as before.
        let resp = a
            .client
            .get(a.url("/healthz"))
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp = a.client.get(a.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}
