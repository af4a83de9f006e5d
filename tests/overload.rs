//! Time and room at the door, on real sockets: a client that trickles its body is cut with 408,
//! one token cannot hold more than its share of calls, a flood past `server.max_in_flight` is
//! refused at once with 503, and a store too far behind to promise a row refuses calls instead
//! of forwarding them unrecorded. Each test is named after the failure it prevents.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

/// A raw HTTP/1.1 request head to the gateway; the body is for the caller to send (or not).
async fn open_request(h: &Harness, path: &str, auth: (&str, &str), extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\n{}: {}\r\nContent-Type: application/json\r\n{extra}\r\n",
        h.addr, auth.0, auth.1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Read until the peer closes or `deadline` passes; returns what came.
async fn read_answer(s: &mut TcpStream, deadline: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: stop once its body is complete.
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n")
                    && let Some(len) = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    && body.len() >= len
                {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn body_json(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test]
async fn a_trickled_body_cannot_hold_a_connection_past_the_body_timeout() {
    let mut h = Harness::start_with(|c| c.server.request_body_timeout_ms = 300).await;
    let jwt = h.token("trickler");
    let bearer = format!("Bearer {jwt}");

    // OpenAI: announces 1 MB, sends one byte.
    let mut s = open_request(
        &h,
        "/openai/v1/chat/completions",
        ("Authorization", &bearer),
        "Content-Length: 1000000\r\n",
    )
    .await;
    s.write_all(b"{").await.unwrap();
    let t = Instant::now();
    let answer = read_answer(&mut s, Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took < Duration::from_secs(2),
        "cut at the deadline, not later: {took:?}"
    );
    let v = body_json(&answer);
    assert_eq!(v["error"]["code"], "request_timeout");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // Gemini, chunked, with a chunk size no body can have: waits for nothing, cut all the same.
    let mut s = open_request(
        &h,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        ("x-goog-api-key", &jwt),
        "Transfer-Encoding: chunked\r\n",
    )
    .await;
    s.write_all(b"FFFFFFFFFFFFFFF\r\n{").await.unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 400"),
        "refused, never left waiting: {answer}"
    );
    let v = body_json(&answer);
    assert!(
        v["error"]["status"] == "DEADLINE_EXCEEDED" || v["error"]["status"] == "INVALID_ARGUMENT",
        "Gemini's shape: {v}"
    );

    assert_eq!(h.mock.hits(), 0, "nothing was forwarded");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.len(),
        2,
        "an authenticated caller's refusal has its row"
    );
    assert_eq!(rows[0].status, 408);
    assert_eq!(rows[0].outcome, "refused_body_timeout");
    assert_eq!(rows[0].user_id, "trickler");
    assert_eq!(rows[0].total_tokens, 0);
    assert!(rows[1].outcome.starts_with("refused_body"), "{:?}", rows[1]);
}

#[tokio::test]
async fn one_token_cannot_hold_more_than_its_share_of_calls() {
    let mut h = Harness::start_with(|c| {
        c.server.max_in_flight_per_user = 3;
        c.server.request_body_timeout_ms = 10_000;
    })
    .await;
    let jwt = h.token("hog");
    let bearer = format!("Bearer {jwt}");
    // Three connections hold their places by never finishing their bodies.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = open_request(
            &h,
            "/openai/v1/chat/completions",
            ("Authorization", &bearer),
            "Content-Length: 1000\r\n",
        )
        .await;
        s.write_all(b"{").await.unwrap();
        held.push(s);
    }
    eventually("three calls in flight", Duration::from_secs(5), || {
        (h.running().metrics.in_flight() == 3).then_some(())
    })
    .await;

    // A fourth call of the same user is refused at once, without reading its body.
    let t = Instant::now();
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 429);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_concurrent_calls");

    // Another user is not affected.
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    let other = h.token("neighbour");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &other, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 200);

    // When the held connections go, the user's places come back.
    drop(held);
    eventually("no call in flight", Duration::from_secs(5), || {
        (h.running().metrics.in_flight() == 0).then_some(())
    })
    .await;
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.hits(), 2);
    h.stop().await;
    let rows = h.rows();
    let hog: Vec<_> = rows.iter().filter(|r| r.user_id == "hog").collect();
    assert_eq!(
        hog.iter()
            .filter(|r| r.outcome == "refused_concurrency")
            .count(),
        1
    );
    assert_eq!(
        hog.iter()
            .filter(|r| r.outcome == "client_gone" || r.outcome == "refused_body_unreadable")
            .count(),
        3,
        "the abandoned calls are recorded too: {hog:?}"
    );
    assert_eq!(hog.iter().filter(|r| r.outcome == "complete").count(), 1);
}

#[tokio::test]
async fn a_flood_past_max_in_flight_is_refused_at_once_with_503() {
    let mut h = Harness::start_with(|c| c.server.max_in_flight = 4).await;
    for _ in 0..4 {
        h.mock.push(
            Reply::json(200, fixture("openai/chat.json")).head_delay(Duration::from_millis(1500)),
        );
    }
    let jwt = h.token("crowd");
    let mut slow = Vec::new();
    for _ in 0..4 {
        let client = h.client.clone();
        let url = h.url("/openai/v1/chat/completions");
        let jwt = jwt.clone();
        slow.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(jwt)
                .body(CHAT_BODY)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    eventually("four calls upstream", Duration::from_secs(5), || {
        (h.mock.hits() == 4).then_some(())
    })
    .await;

    let t = Instant::now();
    let resp = h
        .post_gemini(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            &jwt,
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        )
        .await;
    let took = t.elapsed();
    assert_eq!(resp.status(), 503);
    assert!(took < Duration::from_millis(500), "refused fast: {took:?}");
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "Gemini's shape: {v}");
    assert!(
        h.running()
            .metrics
            .render()
            .contains("tollgate_refusals_total{reason=\"overloaded\"} 1")
    );

    for task in slow {
        assert_eq!(
            task.await.unwrap(),
            200,
            "the calls already in flight finish"
        );
    }
    assert_eq!(h.mock.hits(), 4, "the refused call was never forwarded");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 5);
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.outcome == "refused_overloaded")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].status, refused[0].provider.as_str()),
        (503, "gemini")
    );
}

#[tokio::test]
async fn a_store_too_far_behind_refuses_calls_instead_of_losing_their_rows() {
    // A queue of 8 rows keeps 1 for refusals: at most 7 reserved or queued rows. Without the
    // call journal (which would refuse every call while the database is locked, see
    // tests/crash.rs), the queue's room alone decides.
    let mut h = Harness::start_with(|c| {
        c.store.queue_capacity = 8;
        c.store.commit_interval_ms = 0;
        c.store.journal = tollgate::config::JournalMode::Off;
    })
    .await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("busy");

    // Someone else holds the database's write lock: the writer cannot commit.
    let blocker = h.db_conn();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut statuses = Vec::new();
    for _ in 0..12 {
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
            .await;
        let status = resp.status().as_u16();
        if status == 503 {
            assert_eq!(resp.headers()["retry-after"], "1");
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], "usage_store_busy");
        } else {
            read_all(resp).await.unwrap();
        }
        statuses.push(status);
    }
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        served, 7,
        "calls are served while their rows have room: {statuses:?}"
    );
    assert_eq!(
        h.mock.hits(),
        served,
        "a refused call never reaches the upstream"
    );
    assert!(statuses[7..].iter().all(|s| *s == 503), "{statuses:?}");

    // The lock goes away: every served call has its row, and calls are served again.
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    h.wait_rows(7).await;
    eventually("an empty store queue", Duration::from_secs(10), || {
        (h.running().store.writer_stats().queue_depth == 0).then_some(())
    })
    .await;
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 200);
    read_all(resp).await.unwrap();
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "complete").count(),
        8,
        "every served call is recorded"
    );
    // The first refusal found the headroom kept for refusals; the rest may have been dropped,
    // and were counted.
    assert!(rows.iter().any(|r| r.outcome == "refused_store_full"));
}

#[tokio::test]
async fn a_locked_database_does_not_hold_calls_back_and_their_rows_follow() {
    // The call journal is a file of its own: a call waits for its entry's fsync, never for the
    // database. (A disk that refuses the journal itself is in tests/crash.rs.)
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("journal");
    // Someone else holds the database's write lock: no row can be committed meanwhile.
    let blocker = h.db_conn();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let resp = h
            .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
            .await;
        assert_eq!(resp.status(), 200);
        read_all(resp).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert_eq!(h.mock.hits(), 3);
    assert_eq!(h.running().store.writer_stats().journal_entries, 3);
    assert!(h.rows().is_empty(), "no row could be written yet");
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    h.wait_rows(3).await;
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
        ["complete"; 3]
    );
    let journal = tollgate::store::journal::dir_for(&h.db);
    let left = std::fs::read_dir(&journal).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".calls"))
        })
        .count()
    });
    assert_eq!(
        left,
        0,
        "every entry was closed by its row: {}",
        journal.display()
    );
}
