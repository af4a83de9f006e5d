//! `tollgate backup FILE` as an operator runs it beside a serving gateway: a consistent copy
//! taken under load holds every row committed before it began (a prefix of the history, nothing
//! torn), passes its integrity check, and restored in place of the database serves on with its
//! history; a file that exists, a missing database and a PostgreSQL store are refused.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn backup(config: &Path, to: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .args(["backup"])
        .arg(to)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Call ids of `db`'s `token_usage`, in id order.
fn request_ids(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare("SELECT request_id FROM token_usage ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_a_consistent_prefix_and_restores_in_place() {
    let mut h = Harness::start_with(|c| c.store.commit_interval_ms = 5).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let config = h.dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&h.raw)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..4 {
        let (client, url, jwt, stop) = (
            h.client.clone(),
            h.url("/openai/v1/chat/completions"),
            h.token(&format!("loader-{t}")),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .post(&url)
                    .bearer_auth(&jwt)
                    .body(CHAT)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    h.wait_rows(100).await;

    let copy = h.dir.path().join("backup.db");
    let before = h.rows().len();
    let out = tokio::task::spawn_blocking({
        let (config, copy) = (config.clone(), copy.clone());
        move || backup(&config, &copy)
    })
    .await
    .unwrap();
    let after = h.rows().len();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("integrity check ok"), "{}", text(&out));
    assert!(
        !copy.with_file_name("backup.db-wal").exists(),
        "the copy stands alone"
    );
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for l in load {
        served += l.await.unwrap();
    }

    // The copy: every row committed before it began, each of them, and none torn — the live
    // history's first N rows.
    let copied = request_ids(&copy);
    assert!(
        copied.len() >= before && copied.len() <= after,
        "{} rows in the copy, {before} before it began, {after} after it ended",
        copied.len()
    );
    let live = request_ids(&h.db);
    assert_eq!(copied[..], live[..copied.len()], "a prefix of the history");
    assert!(
        live.len() > copied.len(),
        "the load went on: {served} calls"
    );

    // Restored in place of the database: the gateway serves on it with its history.
    h.stop().await;
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, restored.path().join("tollgate.db")).unwrap();
    let mut raw = h.raw.clone();
    raw.store.path = restored.path().join("tollgate.db");
    let config = tollgate::config::Config::from_raw(raw, &test_env).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = tollgate::serve::start_on(config, listener).await.unwrap();
    let resp = h
        .client
        .post(format!(
            "http://{}/openai/v1/chat/completions",
            running.addr
        ))
        .bearer_auth(h.token("after-restore"))
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    running.shutdown().await;
    let rows = request_ids(&restored.path().join("tollgate.db"));
    assert_eq!(rows.len(), copied.len() + 1);
    assert_eq!(rows[..copied.len()], copied[..]);
}

#[test]
fn a_backup_is_refused_onto_an_existing_file_from_a_missing_database_and_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = test_config("http://127.0.0.1:9", dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&raw)).unwrap();
    let out = backup(&config, &dir.path().join("copy.db"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("there is no database"),
        "{}",
        text(&out)
    );

    {
        let (_queue, writer) =
            tollgate::store::sqlite::Queue::open(&raw.store.path, jiff::tz::TimeZone::UTC, 16, 16)
                .unwrap();
        writer.close();
    }
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, b"mine").unwrap();
    let out = backup(&config, &taken);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exists already"), "{}", text(&out));
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine", "left alone");
    let out = backup(&config, &dir.path().join("fresh.db"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 calls"), "{}", text(&out));

    raw.store.backend = tollgate::config::StoreBackend::Postgres;
    std::fs::write(&config, config_toml(&raw)).unwrap();
    let out = backup(&config, &dir.path().join("pg.db"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("pg_dump"), "{}", text(&out));
}
