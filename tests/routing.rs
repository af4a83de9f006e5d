//! Transparent routing: any method and path under a prefix reaches the configured upstream with
//! its query, body and end-to-end headers; hop-by-hop headers and every client credential are
//! removed, the provider's real key is added its own way, and the client never sees that key.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use common::*;

const CHAT_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;

#[tokio::test]
async fn openai_request_is_forwarded_with_the_real_key_and_without_the_jwt() {
    let h = Harness::start().await;
    h.mock
        .push(Reply::json(200, CHAT_JSON).header("x-request-id", "req_upstream_1"));
    let jwt = h.token("alice");
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions?foo=bar&x=1"))
        .bearer_auth(&jwt)
        .header("content-type", "application/json")
        .header("openai-beta", "assistants=v2")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "hop")
        .header("cookie", "session=secret")
        .header("x-api-key", "other-credential")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-request-id"],
        "req_upstream_1",
        "the upstream's request id passes through"
    );
    assert!(resp.headers().contains_key("x-tollgate-request-id"));
    let text = resp.text().await.unwrap();
    assert_eq!(
        text, CHAT_JSON,
        "the answer reaches the client byte for byte"
    );
    assert!(!text.contains(OPENAI_KEY));

    let seen = h.mock.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/chat/completions?foo=bar&x=1");
    assert_eq!(
        seen.body,
        body.as_bytes(),
        "a non-streaming body is forwarded unchanged"
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(seen.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(
        seen.header("x-drop-me"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(seen.header("host"), Some(h.mock.addr.to_string().as_str()));
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
}

#[tokio::test]
async fn gemini_key_query_parameter_is_replaced_by_the_real_key_header() {
    let h = Harness::start().await;
    h.mock.push(Reply::json(200, r#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":0,"totalTokenCount":3}}"#));
    let jwt = h.token("bob");
    let resp = h
        .client
        .post(h.url(&format!("/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={jwt}&$alt=json;enum-encoding=int")))
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.mock.last();
    assert_eq!(
        seen.target,
        "/v1beta/models/gemini-2.5-flash:generateContent?$alt=json;enum-encoding=int"
    );
    assert_eq!(seen.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(seen.header("authorization"), None);
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
}

#[tokio::test]
async fn gemini_jwt_in_x_goog_api_key_is_swapped() {
    let h = Harness::start().await;
    h.mock.push(Reply::json(200, r#"{"models":[]}"#));
    let jwt = h.token("carol");
    let resp = h
        .client
        .get(h.url("/gemini/v1/models?pageSize=5"))
        .header("x-goog-api-key", &jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), r#"{"models":[]}"#);
    let seen = h.mock.last();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/v1/models?pageSize=5")
    );
    assert_eq!(seen.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert!(h.mock.violations().is_empty(), "{:?}", h.mock.violations());
}

#[tokio::test]
async fn any_method_and_path_under_a_prefix_is_forwarded_and_recorded() {
    let mut h = Harness::start().await;
    h.mock.set_default(Reply::json(200, r#"{"deleted":true}"#));
    let jwt = h.token("dave");
    for (method, path) in [
        ("DELETE", "/openai/v1/files/file-abc"),
        ("GET", "/openai/v1/models"),
        ("PUT", "/openai/unknown/thing"),
    ] {
        let resp = h
            .client
            .request(method.parse().unwrap(), h.url(path))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert_eq!(resp.text().await.unwrap(), r#"{"deleted":true}"#);
    }
    let seen = h.mock.seen();
    assert_eq!(
        seen.iter()
            .map(|s| (s.method.as_str(), s.target.as_str()))
            .collect::<Vec<_>>(),
        [
            ("DELETE", "/v1/files/file-abc"),
            ("GET", "/v1/models"),
            ("PUT", "/unknown/thing"),
        ]
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 3, "every call is recorded: {rows:#?}");
    for r in &rows {
        assert_eq!(
            (
                r.user_id.as_str(),
                r.endpoint.as_str(),
                r.usage_source.as_str(),
                r.total_tokens
            ),
            ("dave", "other", "none", 0)
        );
    }
}

#[tokio::test]
async fn unknown_prefix_is_404_in_openai_shape_and_never_forwarded() {
    let h = Harness::start().await;
    let jwt = h.token("erin");
    for path in [
        "/anthropic/v1/messages",
        "/openaiX/v1/chat/completions",
        "/",
    ] {
        let resp = h.post_openai(path, &jwt, "{}").await;
        assert_eq!(resp.status(), 404, "{path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unknown_url");
        assert!(v["error"]["message"].as_str().unwrap().contains("prefix"));
    }
    assert_eq!(h.mock.hits(), 0);
}

#[tokio::test]
async fn healthz_answers_without_credentials() {
    let h = Harness::start().await;
    let resp = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.hits(), 0);
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_stored_and_a_bad_one_replaced() {
    let mut h = Harness::start().await;
    h.mock.set_default(Reply::json(200, CHAT_JSON));
    let jwt = h.token("frank");
    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .header("x-request-id", "support-ticket-42")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-tollgate-request-id"], "support-ticket-42");
    resp.text().await.unwrap();
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .header("x-request-id", "bad id with spaces and <html>")
        .body(body)
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-tollgate-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(generated.starts_with("tg-"), "{generated}");
    resp.text().await.unwrap();
    h.stop().await;
    let ids: Vec<String> = h.rows().into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids, ["support-ticket-42".to_string(), generated]);
}

#[tokio::test]
async fn http2_clients_are_served_streams_included() {
    let mut h = Harness::start().await;
    h.mock.push(Reply::json(200, CHAT_JSON));
    h.mock
        .push(Reply::sse(fixture("openai/chat_stream_usage.sse")).split_every(100));
    let jwt = h.token("h2");
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), CHAT_JSON);
    let resp = client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read_all(resp).await.unwrap(),
        fixture("openai/chat_stream_usage.sse")
    );
    h.stop().await;
    let rows = h.rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.usage_source.as_str(), r.streamed, r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("reported", false, "complete"),
            ("reported", true, "complete")
        ]
    );
}
