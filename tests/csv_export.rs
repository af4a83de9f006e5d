//! The CSV export carries no live spreadsheet formula, whatever end users put in the fields they
//! control (their JWT `sub`, the model they name, their `x-request-id`). On real sockets: calls
//! through the gateway (one answered 404 by the upstream), then the export through the admin
//! API, parsed as a spreadsheet would read it.
#![allow(clippy::unwrap_used, reason = "tests")]

#[path = "common/admin.rs"]
mod admin;
mod common;

use admin::AdminSide;
use common::{Harness, Reply, fixture};
use reqwest::StatusCode;

const HYPERLINK_SUB: &str = r#"=HYPERLINK("http://evil","x")"#;
const CALC_MODEL: &str = "+cmd|' /C calc'!A0";

/// The cells of an RFC 4180 document (CRLF line ends, `"` quoting with doubled quotes), as a
/// spreadsheet reads them: quotes removed, doubled quotes undone.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(
        !quoted && cell.is_empty() && row.is_empty(),
        "unterminated CSV"
    );
    rows
}

/// Whether a spreadsheet would run a cell that reads like this as a formula.
fn live_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

#[tokio::test]
async fn csv_cells_planted_by_end_users_are_not_live_formulas() {
    let h = Harness::start().await;
    let evil = h.token(HYPERLINK_SUB);
    let at = h.token("@evil");
    let plain = h.token("plain");
    let chat = |model: &str| {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    // 1: the answer names the planted model; the client's request id starts with `-`.
    let answer = serde_json::json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": CALC_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    })
    .to_string();
    h.mock.push(Reply::json(200, answer.clone()));
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&evil)
        .header("x-request-id", "-1-1")
        .body(chat(CALC_MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), answer);
    // 2: the upstream answers 404: the row keeps the model the request named.
    let not_found = r#"{"error":{"message":"The model does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
    h.mock.push(Reply::json(404, not_found));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &evil, chat("@SUM(1+1)"))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.text().await.unwrap(), not_found);
    // 3: an answer without a model: the request's tab-led one is recorded.
    h.mock.push(Reply::json(
        200,
        r#"{"id":"c3","object":"chat.completion","created":1,"choices":[{"index":0,"message":{"role":"assistant","content":"2"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
    ));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &at, chat("\t=1+1"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    // 4: an ordinary call: its cells are written as before.
    h.mock.push(Reply::json(200, fixture("openai/chat.json")));
    let resp = h
        .post_openai("/openai/v1/chat/completions", &plain, chat("gpt-4o"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    h.wait_rows(4).await;

    let a = AdminSide::start(&h).await;
    let (status, text) = a.get_text("/api/admin/usage.csv").await;
    assert_eq!(status, StatusCode::OK);
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 5, "{text}");
    let header = &rows[0];
    assert_eq!(header.len(), 19);
    let col = |name: &str| header.iter().position(|c| c == name).unwrap();
    let numeric = [
        "id",
        "ts",
        "streamed",
        "status",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost_nano_usd",
        "latency_ms",
        "ttfb_ms",
    ];
    for row in &rows[1..] {
        assert_eq!(row.len(), 19, "{row:?}");
        for (name, cell) in header.iter().zip(row) {
            if numeric.contains(&name.as_str()) {
                assert!(
                    cell.is_empty() || cell.parse::<i64>().is_ok(),
                    "{name} = {cell:?} is not a number"
                );
            } else {
                assert!(!live_formula(cell), "{name} = {cell:?} is a live formula");
            }
        }
    }
    let cells = |i: usize| {
        let r = &rows[i];
        (
            r[col("request_id")].as_str(),
            r[col("user_id")].as_str(),
            r[col("model")].as_str(),
            r[col("status")].as_str(),
            r[col("outcome")].as_str(),
        )
    };
    assert_eq!(
        cells(1),
        (
            "'-1-1",
            "'=HYPERLINK(\"http://evil\",\"x\")",
            "'+cmd|' /C calc'!A0",
            "200",
            "complete"
        )
    );
    assert_eq!(rows[1][col("total_tokens")], "12");
    let second = cells(2);
    assert_eq!(
        (second.1, second.2, second.3, second.4),
        (
            "'=HYPERLINK(\"http://evil\",\"x\")",
            "'@SUM(1+1)",
            "404",
            "upstream_error"
        )
    );
    let third = cells(3);
    assert_eq!((third.1, third.2), ("'@evil", "'\t=1+1"));
    let fourth = cells(4);
    assert_eq!((fourth.1, fourth.2), ("plain", "gpt-4o-2024-08-06"));
    assert!(fourth.0.starts_with("tg-"), "{fourth:?}");

    // The bytes themselves: the planted cells quoted, with the quote inside.
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[1].contains(r#","'-1-1","#)
            && lines[1].contains(r#","'=HYPERLINK(""http://evil"",""x"")",openai,"'+cmd|' /C calc'!A0",chat.completions,0,200,"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[4].contains(",plain,openai,gpt-4o-2024-08-06,chat.completions,0,200,"),
        "{}",
        lines[4]
    );
    // The same through the per-user export.
    let (status, mine) = a
        .get_text("/api/admin/usage.csv?user=%3DHYPERLINK(%22http%3A%2F%2Fevil%22%2C%22x%22)")
        .await;
    assert_eq!(status, StatusCode::OK);
    let mine = parse_csv(&mine);
    assert_eq!(mine.len(), 3);
    assert!(
        mine[1..]
            .iter()
            .all(|r| r[col("user_id")] == rows[1][col("user_id")])
    );
    a.stop().await;
}
