//! Several real `tollgate serve` processes on one PostgreSQL database (made and dropped by each
//! test), as an operator runs replicas behind a load balancer: a burst at a limit split across
//! three gateways goes over by at most one call; an operator's block, unblock and limit change
//! made on one gateway apply on another within a second; a gateway killed while holding leases
//! frees its share of the budget within `store.lease_ms`, and its calls are recorded when it
//! comes back; the request rate and the concurrency cap are each gateway's own; a plan's limit
//! holds across gateways, its models are refused on each, and a token naming another plan moves
//! the user on every gateway without resetting the day.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg_server::PgServer;
use common::process::{admin_jwt, jwt, plan_jwt, start_gateway_with, write_config};
use common::*;
use tollgate::config::{RawConfig, StoreBackend};
use tollgate::store::postgres::testing::TestDb;

/// A call whose hold is its 40 output tokens plus the prompt's estimate, and whose answer
/// (below) uses 40 tokens: never more than its hold.
const CALL: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":40,"messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-r","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":30,"total_tokens":40}}"#;

struct Replica {
    child: Option<Child>,
    dir: tempfile::TempDir,
    raw: RawConfig,
    port: u16,
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.raw.admin.listen)
    }
}

/// Gateways `gw-0`, `gw-1`, … on one database, one fake upstream.
struct Fleet {
    db: Arc<TestDb>,
    mock: MockUpstream,
    replicas: Vec<Replica>,
    client: reqwest::Client,
}

impl Fleet {
    async fn start(n: usize, tweak: impl Fn(&mut RawConfig)) -> Fleet {
        Fleet::start_on(Arc::new(TestDb::create().await), n, tweak).await
    }

    async fn start_on(db: Arc<TestDb>, n: usize, tweak: impl Fn(&mut RawConfig)) -> Fleet {
        let mock = MockUpstream::start().await;
        mock.set_default(Reply::json(200, ANSWER));
        let mut fleet = Fleet {
            db,
            mock,
            replicas: Vec::new(),
            client: reqwest::Client::new(),
        };
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let (raw, port) = write_config(&fleet.mock.url(), dir.path(), |c| {
                c.store.backend = StoreBackend::Postgres;
                c.store.replica_id = Some(format!("gw-{i}"));
                c.store.commit_interval_ms = 10;
                tweak(c);
            });
            fleet.replicas.push(Replica {
                child: None,
                dir,
                raw,
                port,
            });
            fleet.launch(i);
        }
        fleet
    }

    /// Start (or start again) replica `i`'s process.
    fn launch(&mut self, i: usize) {
        let url = self.db.url().to_string();
        let r = &mut self.replicas[i];
        let child = tokio::task::block_in_place(|| {
            start_gateway_with(r.dir.path(), r.port, &[], &[("DATABASE_URL", &url)])
        });
        r.child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.replicas[i].child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn token(&self, sub: &str) -> String {
        jwt(&self.replicas[0].raw, sub)
    }

    async fn call(&self, i: usize, jwt: &str, body: &str) -> u16 {
        let resp = self
            .client
            .post(self.replicas[i].url("/openai/v1/chat/completions"))
            .bearer_auth(jwt)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        status
    }

    async fn admin(&self, i: usize, method: reqwest::Method, path: &str, body: &str) -> u16 {
        let r = &self.replicas[i];
        self.client
            .request(method, r.admin_url(path))
            .bearer_auth(admin_jwt(&r.raw))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Call replica `i` every 10 ms until it answers `want`; how long that took.
    async fn until(&self, i: usize, jwt: &str, want: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let status = self.call(i, jwt, CALL).await;
            if status == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "replica {i} still answers {status}, not {want}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the database holds `n` rows; return them.
    async fn rows(&self, n: usize) -> Vec<Row> {
        let url = self.db.url().to_string();
        eventually("the rows", Duration::from_secs(15), || {
            let rows = read_pg_rows(&url);
            (rows.len() >= n).then_some(rows)
        })
        .await
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_at_a_limit_split_across_three_gateways_goes_over_by_at_most_one_call() {
    const LIMIT: i64 = 1_000;
    let fleet = Arc::new(
        Fleet::start(3, |c| {
            c.limits.daily_tokens = LIMIT as u64;
        })
        .await,
    );
    fleet
        .mock
        .set_default(Reply::json(200, ANSWER).head_delay(Duration::from_millis(20)));
    let jwt = fleet.token("racer");
    // 120 calls, 24 at a time, round-robin over the gateways: each gateway alone would let
    // through about the whole limit.
    let gate = Arc::new(tokio::sync::Semaphore::new(24));
    let mut calls = Vec::new();
    for n in 0..120 {
        let (fleet, jwt, gate) = (Arc::clone(&fleet), jwt.clone(), Arc::clone(&gate));
        calls.push(tokio::spawn(async move {
            let _pass = gate.acquire().await.unwrap();
            fleet.call(n % 3, &jwt, CALL).await
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    let served = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(served + refused, 120, "{statuses:?}");

    let rows = fleet.rows(120).await;
    assert_eq!(rows.len(), 120, "one row per call");
    let complete: Vec<&Row> = rows.iter().filter(|r| r.outcome == "complete").collect();
    assert_eq!(complete.len(), served);
    assert_eq!(
        fleet.mock.hits(),
        served,
        "refused calls never reached the upstream"
    );
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "refused_quota").count(),
        refused
    );
    let spent: i64 = complete.iter().map(|r| r.total_tokens).sum();
    let one_call = complete.iter().map(|r| r.total_tokens).max().unwrap();
    assert!(
        spent <= LIMIT + one_call,
        "{spent} tokens spent over three gateways: more than one call past the limit of {LIMIT}"
    );
    assert!(
        spent >= LIMIT / 2,
        "{spent} tokens: the gateways between them let through far less than the limit"
    );
    // Each gateway took its 40 calls and recorded them; which ones served how many is the
    // order their leases were asked in.
    let per_gateway = pg_text_rows(
        fleet.db.url(),
        "SELECT gateway, count(*)::text, (count(*) FILTER (WHERE outcome = 'complete'))::text \
         FROM token_usage GROUP BY gateway ORDER BY gateway",
    );
    assert_eq!(per_gateway.len(), 3, "{per_gateway:?}");
    assert!(
        per_gateway.iter().all(|g| g[1].as_deref() == Some("40")),
        "{per_gateway:?}"
    );
    eprintln!("{spent} tokens of {LIMIT} spent; (gateway, calls, served): {per_gateway:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_made_on_one_gateway_refuses_the_user_on_another_within_a_second() {
    let fleet = Fleet::start(2, |_| {}).await;
    let jwt = fleet.token("roamer");
    assert_eq!(fleet.call(1, &jwt, CALL).await, 200);

    let post = reqwest::Method::POST;
    assert_eq!(
        fleet
            .admin(
                0,
                post.clone(),
                "/api/admin/user/roamer/block",
                r#"{"reason":"abuse"}"#
            )
            .await,
        200
    );
    let took = fleet.until(1, &jwt, 403, Duration::from_secs(1)).await;
    eprintln!("block on gw-0 → refused on gw-1 after {took:?}");

    assert_eq!(
        fleet
            .admin(0, post, "/api/admin/user/roamer/unblock", "")
            .await,
        200
    );
    fleet.until(1, &jwt, 200, Duration::from_secs(1)).await;

    // A limit set on the second gateway applies on the first.
    assert_eq!(
        fleet
            .admin(
                1,
                reqwest::Method::PUT,
                "/api/admin/user/roamer/limits",
                r#"{"daily_tokens":0}"#
            )
            .await,
        200
    );
    fleet.until(0, &jwt, 429, Duration::from_secs(1)).await;

    // Both dashboards read the same figures.
    let stats = |i: usize| {
        let fleet = &fleet;
        async move {
            let r = &fleet.replicas[i];
            fleet
                .client
                .get(r.admin_url("/api/admin/user/roamer/usage"))
                .bearer_auth(admin_jwt(&r.raw))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    // (once the last refusal's row is written)
    let start = Instant::now();
    let (a, b) = loop {
        let (a, b) = (stats(0).await, stats(1).await);
        if a == b || start.elapsed() > Duration::from_secs(3) {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a, b);
    assert_eq!(
        a["quota"]["day"]["used_tokens"], a["user"]["today"]["total_tokens"],
        "the quota shows what every gateway recorded: {a}"
    );
    assert_eq!(a["user"]["blocked"], false, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_holding_leases_frees_the_budget_within_the_lease_time() {
    const LEASE_MS: u64 = 3_000;
    let mut fleet = Fleet::start(2, |c| {
        c.limits.daily_tokens = 3_000;
        c.store.lease_ms = LEASE_MS;
    })
    .await;
    let jwt = fleet.token("holder");
    const BIG: &str =
        r#"{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    // Three calls on gw-0 that the upstream keeps waiting: their holds take the whole budget.
    fleet
        .mock
        .set_default(Reply::json(200, ANSWER).head_delay(Duration::from_secs(60)));
    let mut hanging = Vec::new();
    let mock = fleet.mock.clone();
    for n in 1..=3 {
        let req = fleet
            .client
            .post(fleet.replicas[0].url("/openai/v1/chat/completions"))
            .bearer_auth(&jwt)
            .body(BIG)
            .send();
        hanging.push(tokio::spawn(req));
        // In flight once the upstream has seen it; the third is the last call, past the limit.
        eventually("the call upstream", Duration::from_secs(10), || {
            (mock.hits() >= n).then_some(())
        })
        .await;
    }
    fleet.mock.set_default(Reply::json(200, ANSWER));
    assert_eq!(
        fleet.call(1, &jwt, CALL).await,
        429,
        "gw-0's leases hold the budget"
    );

    fleet.kill(0);
    let killed = Instant::now();
    assert_eq!(
        fleet.call(1, &jwt, CALL).await,
        429,
        "leases outlive a kill"
    );
    let took = fleet
        .until(1, &jwt, 200, Duration::from_millis(LEASE_MS + 1_500))
        .await;
    let since_kill = killed.elapsed();
    eprintln!("gw-0 killed → its budget usable on gw-1 after {since_kill:?} ({took:?} polling)");
    assert!(since_kill <= Duration::from_millis(LEASE_MS + 1_500));
    for h in hanging {
        assert!(
            h.await.unwrap().is_err(),
            "the killed gateway's calls broke"
        );
    }

    // Back, gw-0 records the calls it was killed in (from its journal).
    fleet.launch(0);
    let rows = fleet.rows(7).await;
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "recovered").count(),
        3,
        "{rows:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_from_its_limit_a_user_costs_the_database_a_round_trip_every_few_hundred_calls() {
    let fleet = Fleet::start(2, |c| c.limits.daily_tokens = 1_000_000).await;
    let jwt = fleet.token("steady");
    for n in 0..200 {
        assert_eq!(fleet.call(n % 2, &jwt, CALL).await, 200);
    }
    let mut asks = 0;
    for i in 0..2 {
        let r = &fleet.replicas[i];
        let text = fleet
            .client
            .get(r.admin_url("/metrics"))
            .bearer_auth(admin_jwt(&r.raw))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("tollgate_lease_requests_total{") {
                let n: u64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(
                    rest.starts_with("result=\"fit\"") || n == 0,
                    "gw-{i}: {line}"
                );
                asks += n;
            }
        }
    }
    // One grant per gateway covers a sixteenth of the limit: 62,500 tokens, ~1,000 calls.
    eprintln!("{asks} round trips for 200 calls on two gateways");
    assert!((2..=4).contains(&asks), "{asks} round trips for 200 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_and_the_concurrency_cap_are_each_gateways_own() {
    // What README says holds: with N gateways a user reaches N times each, unless the load
    // balancer keeps them on one.
    let fleet = Fleet::start(2, |c| {
        c.limits.requests_per_minute = 3;
        c.limits.max_concurrent = Some(1);
    })
    .await;
    let jwt = fleet.token("rapid");
    for i in 0..2 {
        for n in 0..3 {
            assert_eq!(fleet.call(i, &jwt, CALL).await, 200, "gw-{i} call {n}");
        }
        assert_eq!(
            fleet.call(i, &jwt, CALL).await,
            429,
            "gw-{i}: its own rate is spent"
        );
    }
    let rows = fleet.rows(8).await;
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "refused_rate").count(),
        2
    );

    // One call at a time per gateway: each gateway holds one of another user's calls at once.
    let slow = fleet.token("slow");
    fleet
        .mock
        .set_default(Reply::json(200, ANSWER).head_delay(Duration::from_secs(2)));
    let before = fleet.mock.hits();
    let mut held = Vec::new();
    for i in 0..2 {
        let req = fleet
            .client
            .post(fleet.replicas[i].url("/openai/v1/chat/completions"))
            .bearer_auth(&slow)
            .body(CALL)
            .send();
        held.push(tokio::spawn(req));
    }
    let mock = fleet.mock.clone();
    eventually("both held calls upstream", Duration::from_secs(10), || {
        (mock.hits() >= before + 2).then_some(())
    })
    .await;
    for i in 0..2 {
        assert_eq!(
            fleet.call(i, &slow, CALL).await,
            429,
            "gw-{i}: its own call in flight"
        );
    }
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_crashed_and_restarted_under_load_loses_no_row_and_writes_none_twice() {
    let server = tokio::task::block_in_place(PgServer::start);
    let db = Arc::new(TestDb::create_on(&server.url()).await);
    let fleet = Arc::new(Fleet::start_on(db, 2, |_| {}).await);
    fleet
        .mock
        .set_default(Reply::json(200, ANSWER).head_delay(Duration::from_millis(5)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..6 {
        let (fleet, stop) = (Arc::clone(&fleet), Arc::clone(&stop));
        let jwt = fleet.token(&format!("load-{t}"));
        load.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, String)> = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = fleet
                    .client
                    .post(fleet.replicas[n % 2].url("/openai/v1/chat/completions"))
                    .bearer_auth(&jwt)
                    .body(CALL)
                    .send()
                    .await
                    .unwrap();
                let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                answers.push((resp.status().as_u16(), id));
                let _ = resp.bytes().await;
                n += 1;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.crash_and_restart());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for l in load {
        answers.extend(l.await.unwrap());
    }
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    assert!(served > 50, "load went through: {served} served");
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{:?}",
        answers
            .iter()
            .filter(|(s, _)| *s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );

    // Every answer has exactly one row, written once the server was back.
    let rows = fleet.rows(answers.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows_now = read_pg_rows(fleet.db.url());
    assert_eq!(rows_now.len(), rows.len(), "no row came twice, late");
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no row written twice");
    for (status, id) in &answers {
        let row = rows.iter().find(|r| &r.request_id == id);
        let row = row.unwrap_or_else(|| panic!("no row for {id} ({status})"));
        assert_eq!(row.status, i64::from(*status), "{id}");
    }
    assert_eq!(rows.len(), answers.len(), "a row per answer, nothing else");
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "complete").count(),
        fleet.mock.hits(),
        "every call the upstream served"
    );
    eprintln!(
        "{} calls across the crash: {served} served, {} refused with 503",
        answers.len(),
        answers.len() - served
    );
    drop(fleet);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_the_database_is_away_records_its_calls_exactly_once_both_are_back()
{
    let mut fleet = Fleet::start(1, |c| {
        c.store.when_unavailable = tollgate::config::WhenUnavailable::AdmitLocally;
    })
    .await;
    let jwt = fleet.token("spooled");
    assert_eq!(fleet.call(0, &jwt, CALL).await, 200);
    fleet.rows(1).await;

    let name = fleet.db.name().to_string();
    fleet
        .db
        .on_server(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await;
    for n in 0..5 {
        assert_eq!(fleet.call(0, &jwt, CALL).await, 200, "call {n} while away");
    }
    // The writer tried, failed, and kept the rows in the journal; then the power goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.kill(0);
    fleet
        .db
        .on_server(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await;
    fleet.launch(0);
    let rows = fleet.rows(6).await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (
                r.outcome.as_str(),
                r.usage_source.as_str(),
                r.status,
                r.total_tokens
            ),
            ("complete", "reported", 200, 40),
            "every call as it ended, not as its estimate: {r:#?}"
        );
    }
    assert_eq!(fleet.mock.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plans_limit_holds_across_gateways_and_another_plan_applies_on_every_gateway() {
    const FREE_DAY: i64 = 400;
    let fleet = Arc::new(
        Fleet::start(2, |c| {
            let free: tollgate::config::PlanConfig = toml::from_str(&format!(
                "daily_tokens = {FREE_DAY}\nmodels = [\"gpt-4o-mini*\"]"
            ))
            .unwrap();
            let pro: tollgate::config::PlanConfig =
                toml::from_str("daily_tokens = 100000").unwrap();
            c.plans.insert("free".into(), free);
            c.plans.insert("pro".into(), pro);
            c.limits.default_plan = Some("free".into());
        })
        .await,
    );
    fleet
        .mock
        .set_default(Reply::json(200, ANSWER).head_delay(Duration::from_millis(10)));
    let raw = &fleet.replicas[0].raw;
    let free = plan_jwt(raw, "tia", "free");
    // A model outside the plan: refused by each gateway, never forwarded.
    let big = r#"{"model":"gpt-4o","max_tokens":40,"messages":[]}"#;
    assert_eq!(fleet.call(0, &free, big).await, 403);
    assert_eq!(fleet.call(1, &free, big).await, 403);
    assert_eq!(fleet.mock.hits(), 0);
    // 30 calls of 40 tokens, 6 at a time over both gateways, against free's 400 a day.
    let gate = Arc::new(tokio::sync::Semaphore::new(6));
    let mut calls = Vec::new();
    for n in 0..30 {
        let (fleet, free, gate) = (Arc::clone(&fleet), free.clone(), Arc::clone(&gate));
        calls.push(tokio::spawn(async move {
            let _pass = gate.acquire().await.unwrap();
            fleet.call(n % 2, &free, CALL).await
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(
        served + statuses.iter().filter(|&&s| s == 429).count(),
        30,
        "{statuses:?}"
    );
    let rows = fleet.rows(32).await;
    let spent: i64 = rows
        .iter()
        .filter(|r| r.outcome == "complete")
        .map(|r| r.total_tokens)
        .sum();
    assert!(
        spent <= FREE_DAY + 40,
        "{spent} tokens over two gateways: more than one call past free's {FREE_DAY}"
    );
    assert!(
        spent >= FREE_DAY / 2,
        "{spent}: far less than the limit let through"
    );
    assert_eq!(
        rows.iter().filter(|r| r.outcome == "refused_plan").count(),
        2
    );

    // Upgraded: a pro token for the same user goes through on both gateways at once, the day's
    // usage kept (each gateway asks the database again under pro's limits).
    let pro = plan_jwt(raw, "tia", "pro");
    assert_eq!(fleet.call(0, &pro, CALL).await, 200);
    assert_eq!(fleet.call(1, &pro, CALL).await, 200);
    assert_eq!(
        fleet.call(1, &pro, big).await,
        200,
        "pro allows every model"
    );
    let me: serde_json::Value = fleet
        .client
        .get(fleet.replicas[1].url("/me/usage"))
        .bearer_auth(&pro)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["plan"], "pro");
    assert_eq!(me["day"]["limit_tokens"], 100_000);
    // The old free token is still past free's day on either gateway.
    assert_eq!(fleet.call(0, &free, CALL).await, 429);
    assert_eq!(fleet.call(1, &free, CALL).await, 429);
    // The user's plan in the database is their latest call's.
    let url = fleet.db.url().to_string();
    eventually("users.plan", Duration::from_secs(10), || {
        let plan = pg_text_rows(&url, "SELECT plan FROM users WHERE id = 'tia'");
        (plan == vec![vec![Some("free".to_string())]]).then_some(())
    })
    .await;
}
