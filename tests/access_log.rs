//! The access log as an operator reads it from the real binary's stderr: one line per call,
//! carrying the call's row (written off the request path, by the store's writer), in the
//! configured format; a model without a price named once, not on every call, with every such
//! call counted in `/metrics`; `log.level = "warn"` keeps the warnings and drops the per-call
//! lines; no credential in any of it.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::time::Duration;

use common::process::*;
use common::*;
use tollgate::config::{LogFormat, RawConfig};

const UNPRICED: &str = "mystery-model-7";

/// A chat completion answered by `model` with 11 input and 5 output tokens.
fn answer(model: &str) -> Vec<u8> {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_753_714_021,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    })
    .to_string()
    .into_bytes()
}

/// Make `n` calls with request ids `{prefix}-{i}`, each answered by `model`.
async fn calls(base: &str, jwt: &str, mock: &MockUpstream, prefix: &str, model: &str, n: usize) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        mock.push_for(&id, Reply::json(200, answer(model)));
        let resp = client
            .post(format!("{base}/openai/v1/chat/completions"))
            .bearer_auth(jwt)
            .header("x-request-id", &id)
            .body(format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
}

/// Start the binary with `tweak`, make the calls of `work`, stop it (SIGTERM writes what is
/// queued) and return its stderr and its `/metrics` page read before the stop.
async fn run(
    tweak: impl FnOnce(&mut RawConfig),
    rows: usize,
    work: impl AsyncFnOnce(&str, &str, &MockUpstream),
) -> (String, String, String) {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (raw, port) = write_config(&mock.url(), dir.path(), tweak);
    let user_jwt = jwt(&raw, "alice@example.com");
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start_gateway(dir.path(), port);
    work(&base, &user_jwt, &mock).await;
    let metrics = admin_metrics(&raw, rows).await;
    assert!(stop(&mut child), "graceful stop");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    (log, metrics, user_jwt)
}

/// `/metrics` once the writer has committed `rows` rows.
async fn admin_metrics(raw: &RawConfig, rows: usize) -> String {
    let admin = admin_jwt(raw);
    let url = format!("http://{}/metrics", raw.admin.listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let want = format!("tollgate_store_rows_committed_total {rows}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client.get(&url).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        if text.lines().any(|l| l == want) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{want}` in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_has_exactly_one_json_access_line_with_its_row_and_no_credential() {
    let (log, _, user_jwt) = run(
        |c| c.log.format = LogFormat::Json,
        12,
        async |base, jwt, mock| calls(base, jwt, mock, "acc", "gpt-4o-mini", 12).await,
    )
    .await;
    for i in 0..12 {
        let id = format!("acc-{i}");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| l.contains(&format!("\"{id}\"")))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {id}:\n{log}");
        let line = &lines[0];
        assert_eq!(line["target"], "tollgate::access", "{line}");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "call");
        assert_eq!(line["request_id"], id.as_str());
        assert_eq!(line["user"], "alice@example.com");
        assert_eq!(line["provider"], "openai");
        assert_eq!(line["model"], "gpt-4o-mini");
        assert_eq!(line["endpoint"], "chat.completions");
        assert_eq!(line["status"], 200);
        assert_eq!(line["outcome"], "complete");
        assert_eq!(line["usage_source"], "reported");
        assert_eq!(line["input_tokens"], 11);
        assert_eq!(line["output_tokens"], 5);
        assert!(line["cost_nano_usd"].as_i64().unwrap() > 0, "{line}");
    }
    assert!(!log.contains(&user_jwt), "the caller's JWT is never logged");
    assert!(
        !log.contains(OPENAI_KEY),
        "the provider key is never logged"
    );
    assert!(!log.contains(JWT_SECRET));
    assert!(
        lines_with(&log, "no price").is_empty(),
        "a priced model draws no warning:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_price_is_named_once_not_on_every_call_and_every_call_is_counted() {
    let (log, metrics, _) = run(
        |_| {},
        30,
        async |base, jwt, mock| calls(base, jwt, mock, "unp", UNPRICED, 30).await,
    )
    .await;
    let warnings = lines_with(&log, "no price for this model");
    assert_eq!(warnings.len(), 1, "one warning for 30 calls:\n{log}");
    assert!(warnings[0].contains(UNPRICED), "{}", warnings[0]);
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    // Text format: the per-call lines are still there, one per call.
    assert_eq!(
        lines_with(&log, "tollgate::access: call ").len(),
        30,
        "{log}"
    );
    assert!(
        metrics.lines().any(|l| l
            == format!(
                "tollgate_unpriced_calls_total{{provider=\"openai\",model=\"{UNPRICED}\"}} 30"
            )),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "tollgate_log_lines_dropped_total 0"),
        "{metrics}"
    );
    // Every call was journaled before it was forwarded (sequential calls: one commit each).
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(figure("tollgate_store_journal_entries_total"), 30);
    assert_eq!(figure("tollgate_store_journal_commits_total"), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_warn_the_per_call_lines_go_and_the_warnings_stay() {
    let (log, _, _) = run(
        |c| c.log.level = "warn".into(),
        10,
        async |base, jwt, mock| {
            calls(base, jwt, mock, "quiet", UNPRICED, 5).await;
            calls(base, jwt, mock, "quiet-priced", "gpt-4o-mini", 5).await;
        },
    )
    .await;
    assert!(
        lines_with(&log, "tollgate::access: call ").is_empty(),
        "no per-call line at warn:\n{log}"
    );
    assert!(lines_with(&log, "quiet-priced").is_empty(), "{log}");
    assert_eq!(
        lines_with(&log, "no price for this model").len(),
        1,
        "{log}"
    );
}
