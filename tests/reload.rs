//! Hot reload of gateway.toml, end to end: a changed file applies limits, prices and providers
//! to the next call without a restart and without dropping an open connection; a call in
//! flight finishes on the configuration it started with; an invalid file is refused, audited,
//! and the running configuration keeps serving; SIGHUP reloads (in a real `tollgate serve`).
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tollgate::config::{ProviderConfig, RawConfig};
use tollgate::pricing::PriceTable;
use tollgate::provider::{ProviderKind, Usage};
use tollgate::reload::{ReloadError, ReloadOutcome, Trigger};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a joke"}],"max_tokens":200}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"messages":[{"role":"user","content":"Count to ten"}]}"#;
/// How long a reload may take to show (debounce + read + apply), with room for a busy machine.
const WITHIN: Duration = Duration::from_secs(15);

fn usage(row: &Row) -> Usage {
    Usage {
        input_tokens: row.input_tokens as u64,
        cached_input_tokens: row.cached_input_tokens as u64,
        output_tokens: row.output_tokens as u64,
        reasoning_tokens: row.reasoning_tokens as u64,
    }
}

fn price(raw: &RawConfig, row: &Row) -> i64 {
    PriceTable::new(&raw.pricing)
        .unwrap()
        .cost_nano_usd(row.model.as_deref().unwrap(), &usage(row))
        .unwrap()
}

fn json(s: &Option<String>) -> serde_json::Value {
    serde_json::from_str(s.as_deref().unwrap()).unwrap()
}

on_both_stores! {
    #[tokio::test]
    async fn a_lower_daily_limit_judges_the_next_call_on_a_connection_opened_before(backend: Backend) {
        let h = Harness::start_with_file_on(backend, |_| {}).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("alice");

        // One HTTP/1.1 keep-alive connection, opened before the reload and used after it.
        let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let driver = tokio::spawn(driver);
        let request = || {
            http::Request::post("/openai/v1/chat/completions")
                .header("host", h.addr.to_string())
                .header("authorization", format!("Bearer {jwt}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
                .unwrap()
        };
        let resp = conn.send_request(request()).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // chat.json uses 1117 + 36 tokens.
        h.wait_rows(1).await;

        let mut raw = h.raw.clone();
        raw.limits.daily_tokens = 1_000;
        h.write_config(&raw);
        eventually("the new daily limit", WITHIN, || {
            (h.running().config().raw.limits.daily_tokens == 1_000).then_some(())
        })
        .await;
        assert_eq!(h.ledger().defaults().daily_tokens, 1_000);

        conn.ready().await.unwrap();
        let resp = conn.send_request(request()).await.unwrap();
        assert_eq!(resp.status(), 429, "judged by the new limit");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "daily_token_limit_reached");
        assert!(!driver.is_finished(), "the connection is still open");
        assert_eq!(h.mock.hits(), 1);

        // The reload's audit row is committed just after the new configuration applies.
        let audit = eventually("the reload's audit row", WITHIN, || {
            let rows = h.audit_rows();
            (!rows.is_empty()).then_some(rows)
        })
        .await;
        assert_eq!(audit.len(), 1, "{audit:#?}");
        let row = &audit[0];
        assert_eq!(
            (
                row.actor.as_str(),
                row.action.as_str(),
                row.detail.as_deref()
            ),
            ("system", "config_reload", Some("file change"))
        );
        assert_eq!(
            json(&row.before_json),
            serde_json::json!({"limits.daily_tokens": 1_000_000_000_000_u64})
        );
        assert_eq!(
            json(&row.after_json),
            serde_json::json!({"limits.daily_tokens": 1_000})
        );
        assert!(
            h.running()
                .metrics
                .render()
                .contains("tollgate_config_reloads_total{result=\"ok\"} 1\n")
        );
    }
}

on_both_stores! {
    #[tokio::test]
    async fn a_new_price_prices_the_next_call(backend: Backend) {
        let h = Harness::start_with_file_on(backend, |_| {}).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("bob");
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        let rows = h.wait_rows(1).await;
        let old_cost = price(&h.raw, &rows[0]);
        assert_eq!(rows[0].cost_nano_usd, Some(old_cost));

        let mut raw = h.raw.clone();
        let p = raw.pricing.get_mut("gpt-4o").unwrap();
        p.input = 5.0;
        p.cached_input = Some(2.0);
        p.output = 20.0;
        h.write_config(&raw);
        eventually("the new price", WITHIN, || {
            (h.running().config().raw.pricing["gpt-4o"].input == 5.0).then_some(())
        })
        .await;

        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        let rows = h.wait_rows(2).await;
        let new_cost = price(&raw, &rows[1]);
        assert_ne!(new_cost, old_cost);
        assert_eq!(rows[1].cost_nano_usd, Some(new_cost));
        let audit = h.audit_rows();
        assert_eq!(
            json(&audit[0].after_json),
            serde_json::json!({
                "pricing.\"gpt-4o\".input": 5.0,
                "pricing.\"gpt-4o\".cached_input": 2.0,
                "pricing.\"gpt-4o\".output": 20.0,
            })
        );
    }
}

on_both_stores! {
    #[tokio::test]
    async fn an_added_provider_routes_and_a_removed_one_stops(backend: Backend) {
        let h = Harness::start_with_file_on(backend, |_| {}).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("carol");
        let resp = h
            .post_openai("/openai-beta/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 404);

        let mut raw = h.raw.clone();
        raw.providers.push(ProviderConfig {
            name: "openai-beta".into(),
            kind: ProviderKind::Openai,
            prefix: "/openai-beta".into(),
            upstream: format!("{}/beta", h.mock.url()),
            api_key_env: "OPENAI_API_KEY".into(),
            unknown_endpoints: Default::default(),
        });
        raw.providers.retain(|p| p.name != "gemini");
        h.write_config(&raw);
        eventually("the new provider", WITHIN, || {
            let config = h.running().config();
            (config.providers.iter().any(|p| &*p.name == "openai-beta")).then_some(())
        })
        .await;

        let resp = h
            .post_openai("/openai-beta/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        assert_eq!(h.mock.last().target, "/beta/v1/chat/completions");
        let resp = h
            .post_gemini(
                "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                &jwt,
                "{}",
            )
            .await;
        assert_eq!(resp.status(), 404, "the removed provider is gone");
        let rows = h.wait_rows(1).await;
        assert_eq!(rows[0].provider, "openai-beta");
        assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
    }
}

on_both_stores! {
    #[tokio::test]
    async fn an_invalid_file_is_refused_and_audited_and_the_old_config_keeps_serving(backend: Backend) {
        let h = Harness::start_with_file_on(backend, |_| {}).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let jwt = h.token("dave");
        let text = config_toml(&h.raw);
        let needle = "daily_tokens = 1000000000000";
        assert!(text.contains(needle), "{text}");
        h.write_config_text(&text.replace(needle, "daily_tokens = \"lots\""));

        let refused = eventually("the refusal's audit row", WITHIN, || {
            h.audit_rows()
                .into_iter()
                .find(|r| r.action == "config_reload_refused")
        })
        .await;
        let detail = refused.detail.unwrap();
        assert!(detail.starts_with("file change: "), "{detail}");
        assert!(detail.contains("limits.daily_tokens"), "{detail}");
        assert_eq!(refused.actor, "system");
        assert_eq!(
            h.running().config().raw.limits.daily_tokens,
            1_000_000_000_000
        );
        assert!(
            h.running()
                .metrics
                .render()
                .contains("tollgate_config_reloads_total{result=\"refused\"} 1\n")
        );
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(resp.status(), 200, "the running configuration still serves");

        // Asked through the API, the same file is refused with the key named; the actor is the admin.
        let err = h
            .running()
            .reload(Trigger::Api {
                actor: "root".into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReloadError::Invalid(m) if m.contains("limits.daily_tokens")),
            "{err}"
        );
        let newest = h.audit_rows().remove(0);
        assert_eq!(
            (newest.actor.as_str(), newest.action.as_str()),
            ("root", "config_reload_refused")
        );

        // Fixed, it applies.
        let mut raw = h.raw.clone();
        raw.limits.daily_tokens = 7;
        h.write_config(&raw);
        eventually("the fixed file", WITHIN, || {
            (h.running().config().raw.limits.daily_tokens == 7).then_some(())
        })
        .await;
    }
}

on_both_stores! {
    #[tokio::test]
    async fn the_reload_sighup_triggers_applies_once_and_names_restart_only_keys(backend: Backend) {
        // No watch: only an explicit reload (what the SIGHUP handler calls) applies the file.
        let h = Harness::start_with_file_on(backend, |c| c.server.watch_config = false).await;
        let mut raw = h.raw.clone();
        raw.limits.requests_per_minute = 5;
        raw.store.batch_max = 17;
        h.write_config(&raw);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            h.running().config().raw.limits.requests_per_minute,
            1_000_000
        );

        let outcome = h.running().reload(Trigger::Sighup).await.unwrap();
        let ReloadOutcome::Applied {
            changes,
            needs_restart,
            audit_id,
        } = outcome
        else {
            panic!("not applied: {outcome:?}");
        };
        let keys: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.needs_restart))
            .collect();
        assert_eq!(
            keys,
            [
                ("limits.requests_per_minute", false),
                ("store.batch_max", true)
            ]
        );
        assert_eq!(needs_restart, ["store.batch_max"]);
        let config = h.running().config();
        assert_eq!(config.raw.limits.requests_per_minute, 5);
        assert_eq!(
            config.raw.store.batch_max, h.raw.store.batch_max,
            "a restart-only key keeps its running value"
        );
        assert_eq!(h.ledger().defaults().requests_per_minute.get(), 5);
        let audit = h.audit_rows();
        assert_eq!(audit.len(), 1);
        assert_eq!(Some(audit[0].id), audit_id);
        assert_eq!(audit[0].actor, "system");
        assert_eq!(
            audit[0].detail.as_deref(),
            Some("SIGHUP; needs a restart: store.batch_max")
        );

        // The same file again: nothing to do, nothing written.
        let again = h.running().reload(Trigger::Sighup).await.unwrap();
        assert_eq!(again, ReloadOutcome::Unchanged);
        assert_eq!(h.audit_rows().len(), 1);
    }
}

on_both_stores! {
    #[tokio::test]
    async fn a_stream_in_flight_finishes_on_the_configuration_it_started_with(backend: Backend) {
        let h = Harness::start_with_file_on(backend, |c| c.server.watch_config = false).await;
        h.mock.push(
            Reply::sse(fixture("openai/chat_stream_usage.sse"))
                .split_every(400)
                .gap(Duration::from_millis(150)),
        );
        let jwt = h.token("erin");
        let mut resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT_STREAM)
            .await;
        assert_eq!(resp.status(), 200);
        let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
        assert_eq!(h.running().metrics.in_flight(), 1);

        // Reprice the model and remove its provider while the answer streams.
        let mut raw = h.raw.clone();
        raw.pricing.get_mut("gpt-4o-mini").unwrap().output = 100.0;
        raw.providers.retain(|p| p.name != "openai");
        h.write_config(&raw);
        let outcome = h
            .running()
            .reload(Trigger::Api {
                actor: "root".into(),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, ReloadOutcome::Applied { .. }));
        let other = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT)
            .await;
        assert_eq!(other.status(), 404, "new calls see the new configuration");
        assert_eq!(
            h.running().metrics.in_flight(),
            1,
            "the stream was still in flight during the reload"
        );

        while let Some(chunk) = resp.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert!(got.ends_with(b"data: [DONE]\n\n"));
        let rows = h.wait_rows(1).await;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (
                row.provider.as_str(),
                row.outcome.as_str(),
                row.usage_source.as_str()
            ),
            ("openai", "complete", "reported")
        );
        assert_eq!(row.cost_nano_usd, Some(price(&h.raw, row)), "the old price");
        assert_ne!(row.cost_nano_usd, Some(price(&raw, row)));
        eventually("no call in flight", WITHIN, || {
            (h.running().metrics.in_flight() == 0).then_some(())
        })
        .await;
    }
}

// --- SIGHUP in a real `tollgate serve` ---

const JWT_SECRET: &str = "sighup-test-secret-0123456789abcdef-XYZ";

/// Kills the child if the test fails before it stops it.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

fn serve_config(dir: &std::path::Path, daily_tokens: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
watch_config = false

[admin]
listen = "127.0.0.1:0"

[limits]
daily_tokens = {daily_tokens}

[store]
path = {db:?}

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "http://127.0.0.1:9"
api_key_env = "OPENAI_API_KEY"
"#,
        db = dir.join("tollgate.db").display().to_string(),
    )
}

#[tokio::test]
async fn sighup_reloads_a_running_tollgate_serve() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, serve_config(dir.path(), 100_000)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir.path())
        .env_clear()
        .env("JWT_SECRET", JWT_SECRET)
        .env("OPENAI_API_KEY", "sk-sighup-test")
        .args(["serve", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Serving(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => log.lock().unwrap().push(line),
                Err(_) => panic!(
                    "no `{needle}` in the log:\n{}",
                    log.lock().unwrap().join("\n")
                ),
            }
        }
    };
    // The handlers are installed before the listener: once it listens, SIGHUP reloads.
    wait_for("tollgate listening");

    std::fs::write(&file, serve_config(dir.path(), 5)).unwrap();
    signal(&child.0, "-HUP");
    wait_for("configuration reloaded");
    let conn = rusqlite::Connection::open_with_flags(
        dir.path().join("tollgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let audit = eventually("the SIGHUP audit row", WITHIN, || {
        tollgate::store::sqlite::audit::audit_page(&conn, None, None, 10)
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.action == "config_reload"))
    })
    .await;
    assert_eq!(audit.detail.as_deref(), Some("SIGHUP"));
    assert_eq!(
        json(&audit.after_json),
        serde_json::json!({"limits.daily_tokens": 5})
    );

    // Still running: a graceful stop exits 0.
    signal(&child.0, "-TERM");
    wait_for("stopped; every usage row is written");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let all = log.lock().unwrap().join("\n");
    assert!(
        !all.contains(JWT_SECRET) && !all.contains("sk-sighup-test"),
        "{all}"
    );
}
