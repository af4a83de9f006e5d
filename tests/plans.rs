//! Plans, end to end on real sockets: the JWT's plan claim picks `[plans.NAME]`, whose models
//! and output ceiling are enforced before anything is forwarded (403 in each provider's shape,
//! a `refused_plan` row), whose limits sit between `[limits]` and a user's overrides (and the
//! admin API says which is which), and which a reload or a token naming another plan changes
//! from the next call, the day's usage kept.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::config::{PlanConfig, RawConfig};
use tollgate::quota::OverridesPatch;

const MINI: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const BIG: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const CHAT_PATH: &str = "/openai/v1/chat/completions";

fn plan(toml_src: &str) -> PlanConfig {
    toml::from_str(toml_src).unwrap()
}

/// free: cheap models only, 100 output tokens per call, 5000 tokens a day; pro: everything but
/// o1-pro, output clamped to 3000; free is the default plan.
fn tiers(raw: &mut RawConfig) {
    let mut plans = BTreeMap::new();
    plans.insert(
        "free".to_string(),
        plan(
            r#"
            daily_tokens = 5000
            requests_per_minute = 600
            models = ["gpt-4o-mini*", "gemini-2.5-flash*"]
            max_output_tokens = 100
            "#,
        ),
    );
    plans.insert(
        "pro".to_string(),
        plan(
            r#"
            daily_tokens = 1000000
            deny_models = ["o1-pro*"]
            max_output_tokens = 3000
            clamp_max_output_tokens = true
            "#,
        ),
    );
    raw.plans = plans;
    raw.limits.default_plan = Some("free".into());
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

on_both_stores! {
    #[tokio::test]
    async fn a_free_user_is_refused_an_expensive_model_in_the_providers_shape_and_nothing_is_forwarded(backend: Backend) {
        let mut h = Harness::start_on(backend, tiers).await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let free = h.plan_token("fay", "free");

        let resp = h.post_openai(CHAT_PATH, &free, BIG).await;
        // Where the user stands is on their plan's limits, refused before admission too.
        let remaining = resp.headers()["x-tollgate-daily-tokens-remaining"].clone();
        assert_eq!(remaining, "5000");
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let (status, v) = error_of(resp).await;
        assert_eq!(status, 403);
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["code"], "model_not_in_plan");
        assert_eq!(
            v["error"]["message"],
            "the model `gpt-4o` is not available on the `free` plan"
        );
        assert_eq!(h.mock.hits(), 0, "refused before forwarding");

        // Gemini: the model is the path's, after normalisation; any case is the same model.
        for path in [
            "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            "/gemini/v1beta/models/gemini-2.5-pro%3AgenerateContent",
            "/gemini/v1beta/models/GEMINI-2.5-PRO:streamGenerateContent?alt=sse",
        ] {
            let (status, v) = error_of(h.post_gemini(path, &free, "{}").await).await;
            assert_eq!(status, 403, "{path}");
            assert_eq!(v["error"]["status"], "PERMISSION_DENIED", "{path}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("`free` plan"),
                "{v}"
            );
        }
        // A body that names its model twice, or not as a string, is not guessed at.
        let (status, v) = error_of(
            h.post_openai(
                "/openai/v1/audio/speech",
                &free,
                r#"{"model":"gpt-4o-mini-tts","model":"tts-1-hd","input":"x"}"#,
            )
            .await,
        )
        .await;
        assert_eq!((status, v["error"]["code"].as_str()), (403, Some("model_required_by_plan")));
        assert_eq!(h.mock.hits(), 0);

        // The cheap model goes through; so does gpt-4o for a pro user.
        assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 200);
        let pro = h.plan_token("pia", "pro");
        assert_eq!(h.post_openai(CHAT_PATH, &pro, BIG).await.status(), 200);
        let (status, _) = error_of(
            h.post_openai(CHAT_PATH, &pro, r#"{"model":"o1-pro-2025-03-19","messages":[]}"#)
                .await,
        )
        .await;
        assert_eq!(status, 403, "pro denies o1-pro");
        assert_eq!(h.mock.hits(), 2);

        h.stop().await;
        let rows = h.rows();
        let refused: Vec<(&str, Option<&str>, i64)> = rows
            .iter()
            .filter(|r| r.outcome == "refused_plan")
            .map(|r| (r.user_id.as_str(), r.model.as_deref(), r.total_tokens))
            .collect();
        assert_eq!(refused.len(), 6, "{refused:?}");
        assert!(refused.contains(&("fay", Some("gpt-4o"), 0)));
        assert!(refused.contains(&("fay", Some("gemini-2.5-pro"), 0)));
        assert!(refused.contains(&("fay", Some("GEMINI-2.5-PRO"), 0)));
        assert!(refused.contains(&("pia", Some("o1-pro-2025-03-19"), 0)));
        assert_eq!(rows.iter().filter(|r| r.outcome == "complete").count(), 2);
    }
}

#[tokio::test]
async fn the_output_ceiling_refuses_clamps_or_fills_in_the_cap_the_providers_way() {
    let h = Harness::start_with(tiers).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let free = h.plan_token("fay", "free");
    let pro = h.plan_token("pia", "pro");

    // free: asking for more than 100 is refused…
    let over = r#"{"model":"gpt-4o-mini","messages":[],"max_completion_tokens":2000}"#;
    let (status, v) = error_of(h.post_openai(CHAT_PATH, &free, over).await).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "max_output_tokens_over_plan");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{v}"
    );
    assert_eq!(h.mock.hits(), 0);
    // …asking for nothing gets the ceiling written in, in the field the endpoint reads.
    let none = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(h.post_openai(CHAT_PATH, &free, none).await.status(), 200);
    let sent = h.mock.last().json();
    assert_eq!(sent["max_completion_tokens"], 100);
    assert_eq!(sent["messages"][0]["content"], "hi");
    // pro clamps: 9000 asked, 3000 sent, in the client's own field.
    let big = r#"{"model":"gpt-4o","messages":[],"max_tokens":9000}"#;
    assert_eq!(h.post_openai(CHAT_PATH, &pro, big).await.status(), 200);
    let sent = h.mock.last().json();
    assert_eq!(sent["max_tokens"], 3000);
    assert!(sent.get("max_completion_tokens").is_none());
    // Gemini: generationConfig.maxOutputTokens, added or lowered.
    h.mock
        .set_default(Reply::json(200, fixture("gemini/generate_content.json")));
    let path = "/gemini/v1beta/models/gemini-2.5-flash:generateContent";
    assert_eq!(
        h.post_gemini(path, &free, r#"{"contents":[]}"#)
            .await
            .status(),
        200
    );
    assert_eq!(
        h.mock.last().json()["generationConfig"]["maxOutputTokens"],
        100
    );
    let body = r#"{"contents":[],"generationConfig":{"maxOutputTokens":65536,"temperature":0}}"#;
    let path_pro = "/gemini/v1beta/models/gemini-2.5-pro:generateContent";
    assert_eq!(h.post_gemini(path_pro, &pro, body).await.status(), 200);
    let sent = h.mock.last().json();
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 3000);
    assert_eq!(sent["generationConfig"]["temperature"], 0);
    // Embeddings generate nothing: forwarded as they are.
    h.mock
        .set_default(Reply::json(200, fixture("openai/embeddings.json")));
    let emb = r#"{"model":"text-embedding-3-small","input":"x"}"#;
    assert_eq!(
        h.post_openai("/openai/v1/embeddings", &pro, emb)
            .await
            .status(),
        200
    );
    assert_eq!(
        h.mock.last().json(),
        serde_json::from_str::<Value>(emb).unwrap()
    );
}

/// The admin side of `h`.
async fn admin(h: &Harness) -> (tollgate::admin::AdminServer, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tollgate::admin::start(h.running().admin_handles(), listener)
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    (server, base)
}

async fn admin_get(h: &Harness, base: &str, path: &str) -> Value {
    let resp = h
        .client
        .get(format!("{base}{path}"))
        .bearer_auth(process::admin_jwt(&h.raw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// The one user the users list shows on `plan`, once the writer has recorded their calls.
async fn users_on(h: &Harness, base: &str, plan: &str) -> Value {
    for _ in 0..500 {
        let page = admin_get(h, base, &format!("/api/admin/users?plan={plan}")).await;
        if page["total"] == 1 {
            return page["users"][0].clone();
        }
        assert_eq!(page["total"], 0, "{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no user on {plan} after 10 s");
}

on_both_stores! {
    #[tokio::test]
    async fn a_plans_limits_sit_between_limits_and_overrides_and_the_admin_api_says_which_is_which(backend: Backend) {
        let h = Harness::start_on(backend, |raw| {
            tiers(raw);
            raw.limits.monthly_tokens = 77_777;
        })
        .await;
        h.mock
            .set_default(Reply::json(200, fixture("openai/chat.json")));
        let free = h.plan_token("fay", "free");
        let pro = h.plan_token("pia", "pro");
        // 1153 tokens a call: five calls pass free's 5000 a day, then it is refused.
        for _ in 0..5 {
            assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 200);
        }
        let (status, v) = error_of(h.post_openai(CHAT_PATH, &free, MINI).await).await;
        assert_eq!((status, v["error"]["code"].as_str()), (429, Some("daily_token_limit_reached")));
        assert!(v["error"]["message"].as_str().unwrap().contains("5000"), "{v}");
        assert_eq!(h.post_openai(CHAT_PATH, &pro, MINI).await.status(), 200);

        let (server, base) = admin(&h).await;
        // The writer records the plan with the rows, a commit interval after the calls.
        let fay = users_on(&h, &base, "free").await;
        assert_eq!(fay["id"], "fay");
        assert_eq!(fay["plan"], "free");
        assert_eq!(fay["limits"]["daily_tokens"], 5000);
        assert_eq!(fay["limits"]["monthly_tokens"], 77_777);
        assert_eq!(fay["limits"]["requests_per_minute"], 600);
        assert_eq!(fay["limit_sources"]["daily_tokens"], "plan");
        assert_eq!(fay["limit_sources"]["monthly_tokens"], "limits");
        assert_eq!(fay["limit_sources"]["requests_per_minute"], "plan");
        // Users who called before there were plans (or on a plan since removed) are on the
        // default plan now: listed under it, and shown on it.
        h.exec(
            "INSERT INTO users (id, created_at, last_seen_at) VALUES ('old-timer', 1, 2); \
             INSERT INTO users (id, created_at, last_seen_at, plan) VALUES ('ex-gold', 1, 2, 'gold')",
        );
        let free_page = admin_get(&h, &base, "/api/admin/users?plan=free&sort=id&order=asc").await;
        let listed: Vec<(&str, &str)> = free_page["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["id"].as_str().unwrap(), u["plan"].as_str().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [("ex-gold", "free"), ("fay", "free"), ("old-timer", "free")]
        );
        let pia = users_on(&h, &base, "pro").await;
        assert_eq!(pia["id"], "pia");
        assert_eq!(pia["limits"]["daily_tokens"], 1_000_000);

        // An operator's override wins over the plan, from the next call on.
        h.actions()
            .set_limits(
                "test",
                "fay",
                OverridesPatch {
                    daily_tokens: Some(Some(50_000)),
                    ..OverridesPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 200);
        let usage = admin_get(&h, &base, "/api/admin/user/fay/usage?days=7").await;
        assert_eq!(usage["user"]["plan"], "free");
        assert_eq!(usage["user"]["limits"]["daily_tokens"], 50_000);
        assert_eq!(usage["user"]["limit_sources"]["daily_tokens"], "override");
        assert_eq!(usage["user"]["limit_sources"]["requests_per_minute"], "plan");
        assert_eq!(usage["quota"]["day"]["token_limit"], 50_000);

        // The plans as they apply.
        let plans = admin_get(&h, &base, "/api/admin/plans").await;
        assert_eq!(plans["plan_claim"], "plan");
        assert_eq!(plans["default_plan"], "free");
        assert_eq!(plans["limits"]["monthly_tokens"], 77_777);
        let names: Vec<&str> = plans["plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["free", "pro"]);
        let free_plan = &plans["plans"][0];
        assert_eq!(free_plan["default"], true);
        assert_eq!(free_plan["models"], json!(["gpt-4o-mini*", "gemini-2.5-flash*"]));
        assert_eq!(free_plan["max_output_tokens"], 100);
        assert_eq!(free_plan["limit_sources"]["daily_tokens"], "plan");
        assert_eq!(free_plan["limit_sources"]["monthly_tokens"], "limits");
        assert_eq!(plans["plans"][1]["clamp_max_output_tokens"], true);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn me_usage_tells_the_app_the_plan_its_models_and_limits() {
    let h = Harness::start_with(tiers).await;
    let free = h.plan_token("fay", "free");
    let v = me_usage(&h.client, &h.url(""), &free).await;
    assert_eq!(v["plan"], "free");
    assert_eq!(
        v["models"]["allowed"],
        json!(["gpt-4o-mini*", "gemini-2.5-flash*"])
    );
    assert_eq!(v["models"]["denied"], json!([]));
    assert_eq!(v["max_output_tokens"], 100);
    assert_eq!(v["day"]["limit_tokens"], 5000);
    assert_eq!(v["requests_per_minute"], 600);
    let pro = h.plan_token("pia", "pro");
    let v = me_usage(&h.client, &h.url(""), &pro).await;
    assert_eq!(v["plan"], "pro");
    assert_eq!(v["models"]["allowed"], Value::Null);
    assert_eq!(v["models"]["denied"], json!(["o1-pro*"]));
    assert_eq!(v["day"]["limit_tokens"], 1_000_000);
    assert_eq!(v["clamp_max_output_tokens"], true);
    // No claim: the default plan.
    let plain = h.token("nia");
    assert_eq!(
        me_usage(&h.client, &h.url(""), &plain).await["plan"],
        "free"
    );
}

#[tokio::test]
async fn a_token_naming_another_plan_moves_the_user_on_their_next_call_and_keeps_the_day() {
    let h = Harness::start_with(tiers).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let free = h.plan_token("ugo", "free");
    for _ in 0..5 {
        assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 200);
    }
    assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 429);
    // Upgraded: the login backend now issues pro tokens. Same day, same usage, pro's limit.
    let pro = h.plan_token("ugo", "pro");
    assert_eq!(h.post_openai(CHAT_PATH, &pro, BIG).await.status(), 200);
    let v = me_usage(&h.client, &h.url(""), &pro).await;
    assert_eq!(v["plan"], "pro");
    assert_eq!(v["day"]["used_tokens"], 6 * 1153, "the day's usage stays");
    // Back on free (an old token): still past free's limit today.
    let (status, _) = error_of(h.post_openai(CHAT_PATH, &free, MINI).await).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn an_unknown_plan_gets_the_default_plan_and_is_counted() {
    let h = Harness::start_with(tiers).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let gold = h.plan_token("gil", "gold");
    let (status, v) = error_of(h.post_openai(CHAT_PATH, &gold, BIG).await).await;
    assert_eq!(status, 403, "gold is unknown: gil is on free");
    assert!(v["error"]["message"].as_str().unwrap().contains("`free`"));
    assert_eq!(h.post_openai(CHAT_PATH, &gold, MINI).await.status(), 200);
    let metrics = &h.running().metrics;
    assert_eq!(metrics.unknown_plans(), 2);
    assert!(
        metrics
            .render()
            .contains("tollgate_unknown_plan_claims_total 2"),
        "{}",
        metrics.render()
    );
    // A known plan is not counted.
    let pro = h.plan_token("pia", "pro");
    assert_eq!(h.post_openai(CHAT_PATH, &pro, BIG).await.status(), 200);
    assert_eq!(metrics.unknown_plans(), 2);
}

#[tokio::test]
async fn an_edited_plan_applies_to_the_next_call_of_every_user_on_it() {
    let h = Harness::start_with_file(tiers).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    let free = h.plan_token("ann", "free");
    let other = h.plan_token("bob", "free");
    assert_eq!(h.post_openai(CHAT_PATH, &free, MINI).await.status(), 200);
    assert_eq!(h.post_openai(CHAT_PATH, &free, BIG).await.status(), 403);

    // The operator lets free users have gpt-4o, and lowers their day to 2000 tokens.
    let mut raw = h.raw.clone();
    tiers(&mut raw);
    let free_plan = raw.plans.get_mut("free").unwrap();
    free_plan.models = Some(vec!["gpt-4o*".into()]);
    free_plan.daily_tokens = Some(2000);
    h.write_config(&raw);
    eventually(
        "the edited plan is in force",
        Duration::from_secs(10),
        || {
            let config = h.running().reloader.config();
            (config.plans.get("free").unwrap().settings.daily_tokens == Some(2000)).then_some(())
        },
    )
    .await;
    // ann used 1153 of 2000: one more call, then refused; the usage before the edit counts.
    assert_eq!(h.post_openai(CHAT_PATH, &free, BIG).await.status(), 200);
    let (status, v) = error_of(h.post_openai(CHAT_PATH, &free, BIG).await).await;
    assert_eq!(status, 429);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2000"),
        "{v}"
    );
    // bob, who had not called, is on the edited plan too.
    assert_eq!(h.post_openai(CHAT_PATH, &other, BIG).await.status(), 200);
    let v = me_usage(&h.client, &h.url(""), &other).await;
    assert_eq!(v["day"]["limit_tokens"], 2000);
    assert_eq!(v["models"]["allowed"], json!(["gpt-4o*"]));
}

#[tokio::test]
async fn a_plan_with_a_bad_pattern_or_an_unknown_default_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let raw = RawConfig::load(&path).unwrap();
        tollgate::config::Config::from_raw(raw, &test_env)
            .unwrap_err()
            .to_string()
    };
    let e = check("[plans.free]\nmodels = [\"gpt-[\"]\n");
    assert!(
        e.starts_with("`plans.free.models[0]`: not a glob pattern"),
        "{e}"
    );
    let e = check("[limits]\ndefault_plan = \"gold\"\n[plans.free]\n");
    assert!(e.starts_with("`limits.default_plan`"), "{e}");
    let e = check("[plans.free]\nclamp_max_output_tokens = true\n");
    assert!(e.contains("plans.free.clamp_max_output_tokens"), "{e}");
    let e = check("[auth]\nplan_claim = \" \"\n");
    assert!(e.starts_with("`auth.plan_claim`"), "{e}");
}
