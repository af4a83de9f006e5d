//! Graceful stop of the real binary: with calls in flight, SIGTERM stops new connections, lets
//! the calls finish, flushes every row and exits 0.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chat_stream(chunks: usize) -> String {
    let mut s = String::new();
    for i in 0..chunks {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_calls_in_flight_loses_no_row_and_exits_zero() {
    let mock = MockUpstream::start().await;
    let body = chat_stream(8);
    // Each stream takes ~8 × 100 ms, so SIGTERM lands while all of them are mid-flight.
    let event_len = body.find("\n\n").unwrap() + 2;
    mock.set_default(
        Reply::sse(body.clone())
            .split_every(event_len)
            .gap(Duration::from_millis(100)),
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("tollgate.db");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 10
# The single-threaded runtime (the SDK suite runs the default, one thread per CPU).
worker_threads = 1
[store]
path = "{}"
[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "{}"
api_key_env = "OPENAI_API_KEY"
[pricing."gpt-4o-mini"]
input = 0.15
output = 0.60
"#,
            db.display(),
            mock.url()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let token = Command::new(bin)
        .args(["token", "--sub", "graceful", "--config"])
        .arg(&config_path)
        .env("JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let jwt = String::from_utf8(token.stdout).unwrap().trim().to_string();
    mock.forbid(&jwt);

    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("JWT_SECRET", JWT_SECRET)
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate did not come up");

    const N: usize = 24;
    let mut calls = Vec::new();
    for i in 0..N {
        let client = client.clone();
        let url = format!("{base}/openai/v1/chat/completions");
        let jwt = jwt.clone();
        calls.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(jwt)
                .header("x-request-id", format!("graceful-{i}"))
                .body(r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            read_all(resp).await.expect("an in-flight call finishes during the grace period")
        }));
    }
    // Let every call get its response head, then ask the gateway to stop.
    while mock.hits() < N {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    for c in calls {
        let got = c.await.unwrap();
        assert_eq!(got, body.as_bytes(), "each in-flight stream arrives whole");
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");

    let rows = read_rows(&db);
    assert_eq!(rows.len(), N, "one row per call: {rows:#?}");
    for r in &rows {
        assert_eq!(
            (
                r.input_tokens,
                r.output_tokens,
                r.usage_source.as_str(),
                r.outcome.as_str()
            ),
            (12, 8, "reported", "complete")
        );
        assert!(r.request_id.starts_with("graceful-"));
    }
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
}
