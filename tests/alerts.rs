//! Alerts end to end: `[[alerts]]` rules fire once per subject and window, are recorded and
//! listed by the admin API, and reach a real local webhook receiver, signed — also when the
//! receiver is down at first, when the store is locked, after a restart and after a reload.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

#[path = "common/admin.rs"]
mod admin;
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admin::AdminSide;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use common::*;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tollgate::config::{AlertRule, RawConfig, WebhookConfig};

/// A chat call whose answer reports `total` tokens (input `total - 50`, output 50).
fn chat_reply(total: u64) -> Reply {
    Reply::json(
        200,
        format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":50,"total_tokens":{total}}}}}"#,
            total - 50
        ),
    )
}

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#;

/// What the receiver got: headers and body of each POST it took.
#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Answer 503 to this many requests first.
    fail: Arc<AtomicU32>,
    /// Every request, taken or not.
    tries: Arc<AtomicU32>,
}

impl Hook {
    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

async fn take(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    hook.tries.fetch_add(1, Ordering::SeqCst);
    if hook
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    hook.got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// Serve `hook` on `listener` until the task is aborted.
fn serve_hook(listener: TcpListener, hook: Hook) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .with_state(hook);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn receiver() -> (Hook, SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hook = Hook::default();
    let task = serve_hook(listener, hook.clone());
    (hook, addr, task)
}

fn webhook(addr: SocketAddr) -> WebhookConfig {
    toml::from_str(&format!(
        r#"
        name = "ops"
        url = "http://{addr}/hook"
        secret_env = "TOLLGATE_WEBHOOK_SECRET"
        "#
    ))
    .unwrap()
}

fn rule(text: &str) -> AlertRule {
    toml::from_str(text).unwrap()
}

/// HMAC-SHA256 written out from RFC 2104, to check the gateway's signature independently.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

fn limits_rule(raw: &mut RawConfig, addr: SocketAddr) {
    raw.limits.daily_tokens = 1_000;
    raw.alerts = vec![rule(
        r#"
        name = "near the limit"
        kind = "user_limit"
        percent = [80, 100]
        windows = ["day"]
        "#,
    )];
    raw.webhooks = vec![webhook(addr)];
}

on_both_stores! {
    #[tokio::test]
    async fn a_user_passing_80_and_100_percent_fires_each_once_signed_recorded_and_listed(backend: Backend) {
        let (hook, addr, _server) = receiver().await;
        let mut h = Harness::start_on(backend, |raw| limits_rule(raw, addr)).await;
        h.mock.set_default(chat_reply(450));
        let alice = h.token("alice");
        let bob = h.token("bob");
        // 450 tokens: 45 %, nothing yet.
        assert_eq!(h.post_openai("/openai/v1/chat/completions", &alice, CHAT).await.status(), 200);
        assert_eq!(h.post_openai("/openai/v1/chat/completions", &bob, CHAT).await.status(), 200);
        h.wait_rows(2).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(hook.count(), 0, "{:?}", hook.bodies());
        // 900: 90 % → the 80 % alert.
        assert_eq!(h.post_openai("/openai/v1/chat/completions", &alice, CHAT).await.status(), 200);
        eventually("the 80 % alert", Duration::from_secs(10), || (hook.count() == 1).then_some(())).await;
        // 1350: past the limit → the 100 % alert; the next calls are refused and fire nothing.
        assert_eq!(h.post_openai("/openai/v1/chat/completions", &alice, CHAT).await.status(), 200);
        eventually("the 100 % alert", Duration::from_secs(10), || (hook.count() == 2).then_some(())).await;
        for _ in 0..3 {
            assert_eq!(h.post_openai("/openai/v1/chat/completions", &alice, CHAT).await.status(), 429);
        }
        h.wait_rows(7).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(hook.count(), 2, "{:?}", hook.bodies());

        let got = hook.got.lock().unwrap().clone();
        let today = h.ledger().seed_days().0;
        for ((headers, body), level) in got.iter().zip(["day tokens 80%", "day tokens 100%"]) {
            let signature = headers["x-tollgate-signature"].to_str().unwrap();
            assert_eq!(
                signature,
                format!("sha256={}", hmac_sha256(WEBHOOK_SECRET.as_bytes(), body)),
                "the signature is the HMAC-SHA256 of the exact body"
            );
            assert_eq!(headers["content-type"], "application/json");
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["rule"], "near the limit");
            assert_eq!(v["kind"], "user_limit");
            assert_eq!(v["subject"], "alice");
            assert_eq!(v["period"], today.as_str());
            assert_eq!(v["level"], level);
            assert_eq!(v["details"]["limit_tokens"], 1000);
            assert_eq!(headers["x-tollgate-alert-id"].to_str().unwrap(), v["id"].to_string());
            assert!(v["message"].as_str().unwrap().contains("alice"), "{v}");
        }
        let first: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(first["details"]["used_tokens"], 900);

        // Recorded and listed, delivered.
        let admin = AdminSide::start(&h).await;
        let page = eventually_delivered(&admin, 2).await;
        assert_eq!(page["last_24h"], 2);
        let levels: Vec<&str> = page["alerts"].as_array().unwrap().iter().map(|a| a["level"].as_str().unwrap()).collect();
        assert_eq!(levels, ["day tokens 100%", "day tokens 80%"], "newest first");
        assert_eq!(page["alerts"][0]["attempts"], 1);
        admin.stop().await;

        // A restart does not fire them again (the table's key holds across processes).
        h.restart().await;
        assert_eq!(h.post_openai("/openai/v1/chat/completions", &alice, CHAT).await.status(), 429);
        h.wait_rows(8).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(hook.count(), 2, "{:?}", hook.bodies());
        h.stop().await;
    }
}

/// The admin API's first page once `n` alerts are all `delivered`.
async fn eventually_delivered(admin: &AdminSide, n: usize) -> serde_json::Value {
    for _ in 0..200 {
        let page = admin.get_ok("/api/admin/alerts").await;
        let alerts = page["alerts"].as_array().unwrap();
        if alerts.len() == n && alerts.iter().all(|a| a["delivery"] == "delivered") {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "alerts not delivered: {}",
        admin.get_ok("/api/admin/alerts").await
    );
}

#[tokio::test]
async fn a_webhook_that_answers_503_gets_the_alert_on_a_retry() {
    let (hook, addr, _server) = receiver().await;
    hook.fail.store(2, Ordering::SeqCst);
    let h = Harness::start_with(|raw| limits_rule(raw, addr)).await;
    h.mock.set_default(chat_reply(900));
    let alice = h.token("alice");
    assert_eq!(
        h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
            .await
            .status(),
        200
    );
    // Attempts at 0 s, 1 s (both 503), 3 s: taken.
    eventually("the retried delivery", Duration::from_secs(15), || {
        (hook.count() == 1).then_some(())
    })
    .await;
    assert_eq!(hook.tries.load(Ordering::SeqCst), 3);
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got[0].0["x-tollgate-delivery-attempt"], "3");
    let admin = AdminSide::start(&h).await;
    let page = eventually_delivered(&admin, 1).await;
    assert_eq!(page["alerts"][0]["attempts"], 3);
    let metrics = admin.get_text("/metrics").await.1;
    assert!(
        metrics.contains("tollgate_webhook_deliveries_total{result=\"retry\"} 2")
            && metrics.contains("tollgate_webhook_deliveries_total{result=\"delivered\"} 1")
            && metrics.contains("tollgate_alerts_total{kind=\"user_limit\"} 1"),
        "{metrics}"
    );
    admin.stop().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_alert_when_it_comes_back() {
    // Take a port, then close it: connections are refused until the receiver starts there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let h = Harness::start_with(|raw| limits_rule(raw, addr)).await;
    h.mock.set_default(chat_reply(900));
    let alice = h.token("alice");
    assert_eq!(
        h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
            .await
            .status(),
        200
    );
    let admin = AdminSide::start(&h).await;
    // Fired and recorded while the receiver is down: pending.
    let page = loop {
        let page = admin.get_ok("/api/admin/alerts").await;
        if page["alerts"].as_array().unwrap().len() == 1 {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page["alerts"][0]["delivery"], "pending");
    // Each failed attempt is counted as it happens: the operator sees the receiver failing.
    let mut failing = 0;
    for _ in 0..100 {
        let page = admin.get_ok("/api/admin/alerts").await;
        failing = page["alerts"][0]["attempts"].as_i64().unwrap();
        if failing >= 2 {
            assert_eq!(page["alerts"][0]["delivery"], "pending", "{page}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failing >= 2,
        "failed attempts are not counted while pending"
    );
    let listener = TcpListener::bind(addr).await.unwrap();
    let hook = Hook::default();
    let _server = serve_hook(listener, hook.clone());
    eventually(
        "the delivery once the receiver is back",
        Duration::from_secs(15),
        || (hook.count() == 1).then_some(()),
    )
    .await;
    let page = eventually_delivered(&admin, 1).await;
    assert!(
        page["alerts"][0]["attempts"].as_i64().unwrap() >= 3,
        "{page}"
    );
    assert_eq!(hook.bodies()[0]["level"], "day tokens 80%");
    admin.stop().await;
}

#[tokio::test]
async fn spend_and_upstream_error_rules_fire_once_per_window_and_episode() {
    let (hook, addr, _server) = receiver().await;
    let h = Harness::start_with(|raw| {
        raw.alerts = vec![
            rule(
                r#"
                name = "daily spend"
                kind = "spend"
                window = "day"
                usd = 0.01
                "#,
            ),
            rule(
                r#"
                name = "upstream failing"
                kind = "upstream_errors"
                percent = 65
                minutes = 1
                min_calls = 4
                "#,
            ),
        ];
        raw.webhooks = vec![webhook(addr)];
    })
    .await;
    let alice = h.token("alice");
    // gpt-4o at $2.50 / M input, $10 / M output: 2,000 in + 50 out = $0.0055 a call.
    h.mock.set_default(chat_reply(2_050));
    for _ in 0..2 {
        assert_eq!(
            h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
                .await
                .status(),
            200
        );
    }
    eventually("the spend alert", Duration::from_secs(10), || {
        (hook.count() == 1).then_some(())
    })
    .await;
    let spend = &hook.bodies()[0];
    assert_eq!(spend["rule"], "daily spend");
    assert_eq!(spend["subject"], "gateway");
    assert!(
        (spend["details"]["spent_usd"].as_f64().unwrap() - 0.011).abs() < 1e-9,
        "{spend}"
    );
    // Four upstream failures out of six forwarded calls in the minute: 67 % ≥ 65 % (three of
    // five, 60 %, does not fire yet, however the rows fall into passes).
    h.mock.set_default(Reply::json(
        500,
        r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
    ));
    for _ in 0..4 {
        assert_eq!(
            h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
                .await
                .status(),
            500
        );
    }
    eventually("the upstream errors alert", Duration::from_secs(10), || {
        (hook.count() == 2).then_some(())
    })
    .await;
    let errors = &hook.bodies()[1];
    assert_eq!(errors["rule"], "upstream failing");
    assert_eq!(errors["details"]["failed"], 4);
    assert_eq!(errors["details"]["forwarded"], 6);
    assert_eq!(errors["subject"], errors["gateway"]);
    // More failures, more spend: the same episode and the same day fire nothing new.
    for _ in 0..4 {
        h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
            .await;
    }
    h.mock.set_default(chat_reply(2_050));
    h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
        .await;
    h.wait_rows(11).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(hook.count(), 2, "{:?}", hook.bodies());
}

#[tokio::test]
async fn a_store_that_falls_behind_is_alerted_while_locked_and_recorded_after() {
    let (hook, addr, _server) = receiver().await;
    let h = Harness::start_with(|raw| {
        raw.alerts = vec![rule(
            r#"
            kind = "store_behind"
            rows = 3
            seconds = 1
            "#,
        )];
        raw.webhooks = vec![webhook(addr)];
    })
    .await;
    h.mock.set_default(chat_reply(100));
    let alice = h.token("alice");
    // Another process holds the database's write lock: the writer cannot commit.
    let lock = h.db_conn();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..5 {
        assert_eq!(
            h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
                .await
                .status(),
            200
        );
    }
    eventually("the backlog alert", Duration::from_secs(15), || {
        (hook.count() == 1).then_some(())
    })
    .await;
    let v = &hook.bodies()[0];
    assert_eq!(v["kind"], "store_behind");
    assert!(v["details"]["queue_rows"].as_u64().unwrap() >= 3, "{v}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // Once the lock is gone: the rows are written and the alert is recorded, delivered.
    h.wait_rows(5).await;
    let admin = AdminSide::start(&h).await;
    let page = eventually_delivered(&admin, 1).await;
    assert_eq!(page["alerts"][0]["kind"], "store_behind");
    admin.stop().await;
}

#[tokio::test]
async fn rules_added_by_a_reload_apply_to_the_next_pass() {
    let (hook, addr, _server) = receiver().await;
    let h = Harness::start_with_file(|raw| {
        raw.limits.daily_tokens = 1_000;
        raw.webhooks = vec![webhook(addr)];
    })
    .await;
    h.mock.set_default(chat_reply(900));
    let alice = h.token("alice");
    assert_eq!(
        h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
            .await
            .status(),
        200
    );
    h.wait_rows(1).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(hook.count(), 0);
    let mut raw = h.raw.clone();
    limits_rule(&mut raw, addr);
    h.write_config(&raw);
    eventually("the reload", Duration::from_secs(10), || {
        (!h.running().reloader.config().raw.alerts.is_empty()).then_some(())
    })
    .await;
    // The rule sees alice at her next call (90 % → 180 %: only the highest, 100 %, fires).
    assert_eq!(
        h.post_openai("/openai/v1/chat/completions", &alice, CHAT)
            .await
            .status(),
        200
    );
    eventually(
        "the alert of the reloaded rule",
        Duration::from_secs(10),
        || (hook.count() == 1).then_some(()),
    )
    .await;
    assert_eq!(hook.bodies()[0]["level"], "day tokens 100%");
}

#[tokio::test]
async fn two_gateways_on_one_database_send_each_alert_once() {
    let (hook, addr, _server) = receiver().await;
    let mut a = Harness::start_pg_with(|raw| {
        limits_rule(raw, addr);
        raw.store.replica_id = Some("gw-a".into());
    })
    .await;
    a.mock.set_default(chat_reply(450));
    let mut raw_b = a.raw.clone();
    raw_b.store.replica_id = Some("gw-b".into());
    raw_b.store.path = a.dir.path().join("b").join("tollgate.db");
    std::fs::create_dir_all(a.dir.path().join("b")).unwrap();
    let b = start_pg(&raw_b, a.pg.as_ref().unwrap()).await;
    let alice = a.token("alice");
    let on = |addr: SocketAddr, body: &'static str| {
        let client = a.client.clone();
        let jwt = alice.clone();
        async move {
            client
                .post(format!("http://{addr}/openai/v1/chat/completions"))
                .bearer_auth(jwt)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(on(a.addr, CHAT).await, 200); // 45 % on A
    // A's watcher looks at alice once her row is written (a pass at least every second) and
    // sees 45 %; only then the call on B, so that B's watcher is the one that sees 90 %.
    a.wait_rows(1).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(on(b.addr, CHAT).await, 200); // 90 % on B: B sends the 80 % alert
    eventually("the 80 % alert", Duration::from_secs(10), || {
        (hook.count() == 1).then_some(())
    })
    .await;
    // A call on A the upstream turns down (no usage): A looks at alice too and sees the same
    // 80 % — already recorded, by B, so A sends nothing.
    a.mock.push(Reply::json(
        400,
        r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#,
    ));
    assert_eq!(on(a.addr, CHAT).await, 400);
    a.wait_rows(3).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(hook.count(), 1, "{:?}", hook.bodies());
    assert_eq!(hook.bodies()[0]["gateway"], "gw-b");
    let rows = pg_text_rows(
        a.pg.as_ref().unwrap().url(),
        "SELECT subject, level, delivery FROM alerts",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    b.shutdown().await;
    a.stop().await;
}

#[tokio::test]
async fn refusals_fire_to_a_slack_compatible_webhook() {
    let (hook, addr, _server) = receiver().await;
    let h = Harness::start_with(|raw| {
        raw.alerts = vec![rule(
            r#"
            name = "refusing"
            kind = "refusals"
            percent = 50
            minutes = 1
            min_calls = 4
            "#,
        )];
        raw.webhooks = vec![
            toml::from_str(&format!(
                "name = \"chat\"\nurl = \"http://{addr}/hook\"\nformat = \"slack\"\n"
            ))
            .unwrap(),
        ];
    })
    .await;
    h.mock.set_default(chat_reply(100));
    let mallory = h.token("mallory");
    assert_eq!(
        h.post_openai("/openai/v1/chat/completions", &mallory, CHAT)
            .await
            .status(),
        200
    );
    h.actions()
        .block("test", "mallory", Some("abuse".into()))
        .await
        .unwrap();
    // One call forwarded, then three refused: 75 % of four calls.
    for _ in 0..3 {
        assert_eq!(
            h.post_openai("/openai/v1/chat/completions", &mallory, CHAT)
                .await
                .status(),
            403
        );
    }
    eventually("the refusals alert", Duration::from_secs(10), || {
        (hook.count() == 1).then_some(())
    })
    .await;
    let got = hook.got.lock().unwrap().clone();
    let (headers, body) = &got[0];
    assert!(
        headers.get("x-tollgate-signature").is_none(),
        "no secret, no signature"
    );
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("refusing") && text.contains("3 of 4 calls"),
        "{text}"
    );
}
