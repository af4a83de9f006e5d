//! A bounded soak on the real binary: hundreds of concurrent calls for a while — streams read to
//! the end, streams the client leaves after the first chunk, plain JSON calls — then quiet.
//! Afterwards nothing is left behind: no call in flight, no reservation held, descriptors back
//! to where they were, memory no higher than after a warm-up of the same load, and every call
//! the upstream served has exactly one row.
//!
//! `SOAK_SECS` (default 15) and `SOAK_CLIENTS` (default 200) make it longer or wider; see the
//! README's test section.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `clients` tasks calling without pause for `secs`, each call with its own request id.
async fn load(
    base: &str,
    jwts: &[String],
    mock: &MockUpstream,
    clients: u64,
    secs: u64,
    ids: &Arc<AtomicU64>,
) -> u64 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base, jwt, mock, ids) = (
                client.clone(),
                base.to_string(),
                jwts[c as usize % jwts.len()].clone(),
                mock.clone(),
                Arc::clone(ids),
            );
            tokio::spawn(async move {
                let mut made = 0u64;
                while Instant::now() < until {
                    let n = ids.fetch_add(1, Ordering::Relaxed);
                    let id = format!("soak-{n}");
                    let kind = (n + c) % 3;
                    let (body, reply) = if kind == 2 {
                        (
                            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
                            Reply::json(200, fixture("openai/chat.json")),
                        )
                    } else {
                        (
                            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                            Reply::sse(fixture("openai/chat_stream_usage.sse"))
                                .split_every(300)
                                .gap(Duration::from_millis(5)),
                        )
                    };
                    mock.push_for(&id, reply);
                    let resp = client
                        .post(format!("{base}/openai/v1/chat/completions"))
                        .bearer_auth(&jwt)
                        .header("x-request-id", &id)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    made += 1;
                    if kind == 1 {
                        // Leave after the first chunk.
                        let mut resp = resp;
                        let _ = resp.chunk().await;
                    } else {
                        read_all(resp).await.unwrap();
                    }
                }
                made
            })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap();
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_soak_of_concurrent_streams_leaves_nothing_behind() {
    let secs = env_or("SOAK_SECS", 15);
    let clients = env_or("SOAK_CLIENTS", 200);
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), |c| {
        // Idle upstream connections are let go quickly, so descriptors can be compared.
        c.server.pool_idle_timeout_secs = 1;
    });
    // Ten users, each well inside server.max_in_flight_per_user.
    let jwts: Vec<String> = (0..10)
        .map(|u| jwt(&raw, &format!("soak-user-{u}")))
        .collect();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start_gateway(dir.path(), port);
    let pid = child.id();
    let fds_idle = fds(pid);
    let ids = Arc::new(AtomicU64::new(0));

    // Warm-up: the same load, briefly, so the allocator and pools reach their working size.
    load(&base, &jwts, &mock, clients, 3, &ids).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_warm = rss_kib(pid);

    let made = load(&base, &jwts, &mock, clients, secs, &ids).await;
    // Quiet: calls the clients left end (the upstream is told), idle connections close.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut users = Vec::new();
    for jwt in &jwts {
        users.push(eventually_json(&client, &base, jwt).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_after, fds_after) = (rss_kib(pid), fds(pid));
    eprintln!(
        "soak: {clients} clients × {secs} s, {made} calls; RSS {rss_warm} KiB after warm-up, \
         {rss_after} KiB after; descriptors {fds_idle} idle, {fds_after} after"
    );
    for me in &users {
        assert_eq!(me["in_flight"], 0, "no call left in flight: {me}");
        assert_eq!(
            me["day"]["reserved_tokens"], 0,
            "no reservation left held: {me}"
        );
    }
    assert!(
        fds_after <= fds_idle + 4,
        "descriptors back to baseline: {fds_idle} idle, {fds_after} after"
    );
    assert!(
        rss_after <= rss_warm + 16 * 1024,
        "memory did not grow with the soak: {rss_warm} KiB after warm-up, {rss_after} KiB after"
    );
    assert!(stop(&mut child), "a graceful stop exits 0");

    // Rows = calls: every call the upstream received has exactly one row.
    let conn = rusqlite::Connection::open(&raw.store.path).unwrap();
    let mut rows: HashMap<String, u32> = HashMap::new();
    let mut stmt = conn.prepare("SELECT request_id FROM token_usage").unwrap();
    for id in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        *rows.entry(id.unwrap()).or_insert(0) += 1;
    }
    let seen: Vec<String> = mock
        .seen()
        .iter()
        .filter_map(|s| s.header("x-request-id").map(str::to_string))
        .collect();
    assert!(
        seen.len() as u64 >= made,
        "{} served, {made} made",
        seen.len()
    );
    let wrong: Vec<_> = seen.iter().filter(|id| rows.get(*id) != Some(&1)).collect();
    assert!(
        wrong.is_empty(),
        "{} calls without exactly one row: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(rows.len(), seen.len(), "no row without a call");
}

/// `/me/usage` once no call of the user is in flight (calls the clients left may take a moment
/// to end).
async fn eventually_json(client: &reqwest::Client, base: &str, jwt: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let me = me_usage(client, base, jwt).await;
        if me["in_flight"] == 0 || Instant::now() > deadline {
            return me;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
