//! `kill -9` at random moments under mixed load: every call the upstream served has exactly one
//! row after the restart, and the database is intact.
//!
//! The real `tollgate serve` binary runs as a child process against the fake upstream of this
//! test. Eight clients call through it without pause — OpenAI non-streamed and streamed (some
//! hanging up after the first chunk), Gemini non-streamed and streamed over SSE — each call with
//! its own `x-request-id`, which the gateway uses as the row's `request_id` and passes upstream.
//! At a random moment the gateway is SIGKILLed; it is started again on the same database, and
//! then, for every request the upstream ever received, there must be exactly one row (its own,
//! or the `recovered` row the call journal made at start), and `PRAGMA integrity_check` is `ok`.
//!
//! `CRASH_ROUNDS` (default 20) and `CRASH_SEED` choose the rounds and the schedule; a failure
//! prints the seed to replay it.
//!
//! Also here, for the same real process: running out of file descriptors is survived, and a disk
//! that refuses the call journal's writes refuses calls rather than serving them unrecorded.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::process::*;
use common::rng::Rng;
use common::*;

/// Every `request_id` in the database with its number of rows, and the `recovered` ones.
fn rows_by_request_id(db: &Path) -> (HashMap<String, u32>, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "the database is intact after a kill");
    let mut counts = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT request_id, outcome FROM token_usage")
        .unwrap();
    let mut recovered = 0;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (id, outcome) = row.unwrap();
        *counts.entry(id).or_insert(0) += 1;
        if outcome == "recovered" {
            recovered += 1;
        }
    }
    (counts, recovered)
}

/// One client: calls of every kind until `stop`, each with a fresh request id.
async fn client_loop(
    base: String,
    jwt: String,
    mock: MockUpstream,
    seed: u64,
    ids: Arc<AtomicU64>,
    round: u32,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let id = format!("crash-{round}-{}", ids.fetch_add(1, Ordering::Relaxed));
        let kind = rng.below_u64(5);
        let (path, body, reply, hang_up) = match kind {
            0 => (
                "/openai/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
                Reply::json(200, fixture("openai/chat.json"))
                    .head_delay(Duration::from_millis(rng.below_u64(30))),
                false,
            ),
            1 | 2 => (
                "/openai/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                Reply::sse(fixture("openai/chat_stream_usage.sse"))
                    .split_every(200)
                    .gap(Duration::from_millis(3)),
                kind == 2,
            ),
            3 => (
                "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
                Reply::json(200, fixture("gemini/generate_content.json")),
                false,
            ),
            _ => (
                "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
                Reply::sse(fixture("gemini/stream_sse.sse"))
                    .split_every(150)
                    .gap(Duration::from_millis(2)),
                false,
            ),
        };
        mock.push_for(&id, reply);
        let mut req = client
            .post(format!("{base}{path}"))
            .header("x-request-id", &id)
            .body(body);
        req = if path.starts_with("/gemini") {
            req.header("x-goog-api-key", &jwt)
        } else {
            req.bearer_auth(&jwt)
        };
        let Ok(mut resp) = req.send().await else {
            // The gateway is gone (killed): this client's round is over.
            break;
        };
        if hang_up {
            let _ = resp.chunk().await;
            drop(resp);
            continue;
        }
        if read_all(resp).await.is_err() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_never_loses_a_served_call() {
    let rounds: u32 = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash loop: {rounds} rounds, CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);

    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(200, fixture("openai/chat.json")));
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), |_| {});
    let db = raw.store.path.clone();
    let jwt = jwt(&raw, "crash-user");

    let ids = Arc::new(AtomicU64::new(0));
    let base = format!("http://127.0.0.1:{port}");
    let mut served_total = 0;
    let mut recovered_total = 0;
    for round in 0..=rounds {
        let mut child = start_gateway(dir.path(), port);

        // Everything the upstream received so far has exactly one row, made by the gateway
        // that served it or recovered from the journal by this one at start.
        let (rows, recovered) = rows_by_request_id(&db);
        let seen: Vec<String> = mock
            .seen()
            .iter()
            .filter_map(|s| s.header("x-request-id").map(str::to_string))
            .collect();
        let missing: Vec<&String> = seen.iter().filter(|id| !rows.contains_key(*id)).collect();
        let doubled: Vec<(&String, &u32)> = rows.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            missing.is_empty() && doubled.is_empty(),
            "after {round} kills (CRASH_SEED={seed}): {} served calls without a row {:?}, rows twice {:?}",
            missing.len(),
            &missing[..missing.len().min(10)],
            &doubled[..doubled.len().min(10)]
        );
        served_total = seen.len();
        recovered_total = recovered;
        if round == rounds {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "a graceful stop after the loop exits 0");
            break;
        }

        // Load, then SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(client_loop(
                    base.clone(),
                    jwt.clone(),
                    mock.clone(),
                    rng.next(),
                    Arc::clone(&ids),
                    round,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30 + rng.below_u64(400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
    }
    eprintln!(
        "crash loop: {rounds} kills, {served_total} calls served upstream, every one with exactly one row; {recovered_total} rows recovered from the journal"
    );
    assert!(
        served_total > rounds as usize * 10,
        "the load reached the upstream ({served_total} calls)"
    );
    assert!(
        recovered_total > 0,
        "some kills caught calls in flight (else the loop tests nothing)"
    );
}

#[tokio::test]
async fn a_call_cut_by_kill_9_counts_against_the_limit_after_restart() {
    let mock = MockUpstream::start().await;
    // A slow stream (a piece a second): the call is in flight when the gateway dies.
    mock.set_default(
        Reply::sse(fixture("openai/chat_stream_usage.sse"))
            .split_every(400)
            .gap(Duration::from_secs(1)),
    );
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), |c| c.limits.daily_tokens = 5_000);
    let jwt = jwt(&raw, "cut-user");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}"#;

    let mut child = start_gateway(dir.path(), port);
    let mut resp = client
        .post(format!("{base}/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .header("x-request-id", "cut-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some(), "the stream started");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(mock.hits(), 1);

    let mut child = start_gateway(dir.path(), port);
    let rows = read_rows(&raw.store.path);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (
            row.request_id.as_str(),
            row.outcome.as_str(),
            row.usage_source.as_str(),
            row.status
        ),
        ("cut-1", "recovered", "estimated", 0)
    );
    assert_eq!(
        row.output_tokens, 5_000,
        "the reservation's output cap is the estimate"
    );
    assert!(row.input_tokens > 0);
    assert!(
        row.cost_nano_usd.is_some_and(|c| c > 0),
        "priced like any call"
    );

    // The recovered tokens count: the user's day now holds more than its 5,000 tokens, so the
    // next call is refused before it reaches the upstream.
    let me = me_usage(&client, &base, &jwt).await;
    assert_eq!(me["day"]["used_tokens"], row.total_tokens);
    let resp = client
        .post(format!("{base}/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(mock.hits(), 1, "refused before forwarding");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn running_out_of_descriptors_is_survived() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(200, fixture("openai/chat.json")));
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), |_| {});
    let jwt = jwt(&raw, "fd-user");
    let mut child = start_gateway_under(dir.path(), port, &["prlimit", "--nofile=96:96", "--"]);

    // Hold far more connections than the gateway has descriptors.
    let mut held = Vec::new();
    for _ in 0..200 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            held.push(s);
        }
    }
    assert!(
        held.len() > 96,
        "more connections than descriptors ({})",
        held.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running while out of descriptors"
    );

    // Once they are gone, it serves again: accepting, upstream connections and the database.
    drop(held);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(resp) = client
            .post(format!(
                "http://127.0.0.1:{port}/openai/v1/chat/completions"
            ))
            .bearer_auth(&jwt)
            .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
        {
            status = resp.status().as_u16();
            if status == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "serving again after the descriptors came back");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(
        log.contains("accept failed"),
        "the exhaustion was seen and logged"
    );
    let rows = read_rows(&raw.store.path);
    assert_eq!(rows.iter().filter(|r| r.outcome == "complete").count(), 1);
}

/// A disk that refuses the journal's writes (the file-size limit here; a full disk fails the
/// same write): a call whose entry cannot be written is refused with 503 and never reaches the
/// upstream, the gateway keeps running, and once the disk takes writes again calls are served
/// and every one of them has its row.
#[tokio::test]
async fn a_disk_that_refuses_the_journal_refuses_calls_instead_of_forwarding_them() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(200, fixture("openai/chat.json")));
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), |_| {});
    let jwt = jwt(&raw, "full-disk");
    let mut child = start_gateway(dir.path(), port);
    let pid = child.id().to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |id: &'static str| {
        client
            .post(format!(
                "http://127.0.0.1:{port}/openai/v1/chat/completions"
            ))
            .bearer_auth(&jwt)
            .header("x-request-id", id)
            .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
    };
    let resp = call("before").await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    // From now on no file of the process may grow past one byte.
    let limit = |value: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={value}:")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit --fsize={value}");
    };
    limit("1");
    for id in ["refused-1", "refused-2"] {
        let resp = call(id).await.unwrap();
        assert_eq!(resp.status(), 503, "{id}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "usage_store_busy");
    }
    assert_eq!(mock.hits(), 1, "never forwarded without its journal entry");
    assert!(child.try_wait().unwrap().is_none(), "still running");

    limit("unlimited");
    let resp = call("after").await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(child.wait().unwrap().success());

    let mut outcomes: Vec<(String, String)> = read_rows(&raw.store.path)
        .into_iter()
        .map(|r| (r.request_id, r.outcome))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("after".into(), "complete".into()),
            ("before".into(), "complete".into()),
            ("refused-1".into(), "refused_store_full".into()),
            ("refused-2".into(), "refused_store_full".into()),
        ]
    );
    // A restart finds nothing to recover: the refused calls' rows closed their entries.
    let mut child = start_gateway(dir.path(), port);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert_eq!(read_rows(&raw.store.path).len(), 4);
}
