//! HTTP/2 at the edge, with a raw HTTP/2 client on real sockets: the stream cap is announced and
//! held, an oversized header list is refused without reaching the upstream, and a rapid-reset
//! flood (open a stream, cancel it, repeat) gets the connection closed while the gateway keeps
//! serving everyone else.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::net::TcpStream;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

async fn h2_connect(h: &Harness) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn chat_request(h: &Harness, jwt: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/openai/v1/chat/completions", h.addr))
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn one_connection_cannot_have_more_calls_in_flight_than_the_stream_cap() {
    let h = Harness::start_with(|c| c.server.http2_max_concurrent_streams = 4).await;
    let mut send = h2_connect(&h).await.ready().await.unwrap();
    let jwt = h.token("streams");
    // Six streams whose bodies never end: only four may be open at once.
    let mut open = Vec::new();
    for _ in 0..6 {
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_millis(300), send.clone().ready()).await
        else {
            break;
        };
        send = ready;
        open.push(send.send_request(chat_request(&h, &jwt), false).unwrap());
    }
    eventually("four calls in flight", Duration::from_secs(5), || {
        (h.running().metrics.in_flight() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.running().metrics.in_flight(),
        4,
        "the server holds its announced cap of 4 streams"
    );
    drop(open);
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_before_the_upstream() {
    let h = Harness::start_with(|c| c.server.max_header_bytes = 16 * 1024).await;
    let jwt = h.token("headers");
    let mut send = h2_connect(&h).await.ready().await.unwrap();
    let mut req = chat_request(&h, &jwt);
    for i in 0..40 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
            http::HeaderValue::from_str(&"a".repeat(1024)).unwrap(),
        );
    }
    let outcome = match send.send_request(req, true) {
        Ok((resp, _)) => match resp.await {
            Ok(resp) => Some(resp.status().as_u16()),
            Err(_) => None, // reset or connection error: refused all the same
        },
        Err(_) => None,
    };
    assert!(
        outcome.is_none() || outcome == Some(431),
        "refused, not served: {outcome:?}"
    );
    assert_eq!(h.mock.hits(), 0);
}

#[tokio::test]
async fn a_rapid_reset_flood_reaches_no_upstream_and_leaves_nothing_in_flight() {
    let mut h = Harness::start().await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let jwt = h.token("resetter");
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut opened = 0;
    for _ in 0..2_000 {
        let Ok(ready) = send.clone().ready().await else {
            break;
        };
        send = ready;
        let Ok((_resp, mut body)) = send.send_request(chat_request(&h, &jwt), false) else {
            break;
        };
        body.send_reset(h2::Reason::CANCEL);
        opened += 1;
    }
    assert!(opened > 0);
    // Meanwhile, and afterwards, everyone else is served as before.
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    assert_eq!(resp.status(), 200);
    read_all(resp).await.unwrap();
    drop(send);
    conn.abort();
    eventually("no call in flight", Duration::from_secs(10), || {
        (h.running().metrics.in_flight() == 0).then_some(())
    })
    .await;
    assert_eq!(h.mock.hits(), 1, "no cancelled stream reached the upstream");
    h.stop().await;
    let rows = h.rows();
    let completed = rows.iter().filter(|r| r.outcome == "complete").count();
    assert_eq!(completed, 1);
    assert!(
        rows.iter().all(|r| r.outcome == "complete"
            || r.outcome.starts_with("refused_")
            || r.outcome == "client_gone"),
        "every cancelled call that got as far as its caller is recorded as cut short"
    );
    eprintln!("{opened} streams opened and reset; {} rows", rows.len());
}
