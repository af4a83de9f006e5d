//! Shared test harness: a fake upstream that speaks the providers' wire formats over raw TCP
//! (so tests control exactly where the bytes split), and Tollgate started in-process on
//! 127.0.0.1:0 against it with a real SQLite file in a temp dir.
#![allow(dead_code)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tollgate::config::{Config, ProviderConfig, RawConfig};
use tollgate::provider::ProviderKind;
use tollgate::serve::{Options, Running};

pub mod pg_server;
pub mod process;
pub mod rng;

pub const OPENAI_KEY: &str = "sk-test-openai-REALKEY-0123456789";
pub const GEMINI_KEY: &str = "AIza-test-gemini-REALKEY-0123456789";
pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
/// The webhook signing secret [`test_env`] gives `TOLLGATE_WEBHOOK_SECRET`.
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef";

/// A fixture file's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// How the fake upstream answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, written in these pieces (each its own write, flushed, with `gap` between).
    pub pieces: Vec<Vec<u8>>,
    /// `chunked` transfer encoding (streams) or `content-length`.
    pub chunked: bool,
    /// Wait before the response head.
    pub head_delay: Duration,
    /// Wait between body pieces.
    pub gap: Duration,
    /// Close the connection after this many pieces, without ending the body.
    pub cut_after: Option<usize>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            pieces: vec![body.into()],
            chunked: false,
            head_delay: Duration::ZERO,
            gap: Duration::ZERO,
            cut_after: None,
        }
    }

    pub fn sse(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces: vec![body.into()],
            chunked: true,
            head_delay: Duration::ZERO,
            gap: Duration::ZERO,
            cut_after: None,
        }
    }

    /// A JSON array stream (Gemini `streamGenerateContent` without `alt=sse`).
    pub fn json_stream(body: impl Into<Vec<u8>>) -> Reply {
        let mut r = Reply::sse(body);
        r.headers = vec![(
            "content-type".into(),
            "application/json; charset=UTF-8".into(),
        )];
        r
    }

    /// Split the body into pieces of `n` bytes.
    pub fn split_every(mut self, n: usize) -> Reply {
        let all: Vec<u8> = self.pieces.concat();
        self.pieces = all.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        self
    }

    /// Split the body at these offsets.
    pub fn split_at(mut self, offsets: &[usize]) -> Reply {
        let all: Vec<u8> = self.pieces.concat();
        let mut pieces = Vec::new();
        let mut last = 0;
        for &o in offsets {
            if o > last && o < all.len() {
                pieces.push(all[last..o].to_vec());
                last = o;
            }
        }
        pieces.push(all[last..].to_vec());
        self.pieces = pieces;
        self
    }

    pub fn gzip(mut self) -> Reply {
        let all: Vec<u8> = self.pieces.concat();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&all).unwrap();
        self.pieces = vec![enc.finish().unwrap()];
        self.headers
            .push(("content-encoding".into(), "gzip".into()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn head_delay(mut self, d: Duration) -> Reply {
        self.head_delay = d;
        self
    }

    pub fn gap(mut self, d: Duration) -> Reply {
        self.gap = d;
        self
    }

    pub fn cut_after(mut self, pieces: usize) -> Reply {
        self.cut_after = Some(pieces);
        self
    }
}

/// One request as the fake upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream request body is JSON")
    }
}

#[derive(Default)]
struct MockState {
    replies: VecDeque<Reply>,
    /// Replies for requests carrying a given `x-request-id` (for concurrent tests).
    by_id: HashMap<String, Reply>,
    default_reply: Option<Reply>,
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Answers whose writing failed because the other side (Tollgate) closed the connection.
    broken_writes: usize,
    /// Client credentials that must never reach the upstream.
    forbidden: Vec<String>,
}

/// A fake provider on 127.0.0.1:0 speaking HTTP/1.1 over raw TCP.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(MockState::default()));
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = Arc::clone(&st);
                tokio::spawn(async move { serve_conn(sock, st).await });
            }
        });
        MockUpstream { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next request with `reply` (queued replies are used in order).
    pub fn push(&self, reply: Reply) {
        self.state.lock().unwrap().replies.push_back(reply);
    }

    /// Answer the request whose `x-request-id` is `id` with `reply`.
    pub fn push_for(&self, id: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .by_id
            .insert(id.to_string(), reply);
    }

    /// Answer every request without a queued reply with `reply`.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default_reply = Some(reply);
    }

    /// A client credential that must never reach the upstream.
    pub fn forbid(&self, secret: &str) {
        self.state
            .lock()
            .unwrap()
            .forbidden
            .push(secret.to_string());
    }

    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw a request")
    }

    /// Answers the gateway stopped reading (it closed the upstream connection mid-answer).
    pub fn broken_writes(&self) -> usize {
        self.state.lock().unwrap().broken_writes
    }

    /// Credential violations: a client token that reached the upstream, or a missing real key.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

async fn serve_conn(mut sock: TcpStream, state: Arc<Mutex<MockState>>) {
    let _ = sock.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Read a request head.
        let (seen, consumed, content_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let hs: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let cl = hs
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let seen = Seen {
                        method: req.method.unwrap_or("").to_string(),
                        target: req.path.unwrap_or("").to_string(),
                        headers: hs,
                        body: Vec::new(),
                    };
                    break (seen, n, cl);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            let mut tmp = [0u8; 16 * 1024];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        buf.drain(..consumed);
        while buf.len() < content_length {
            let mut tmp = vec![0u8; 256 * 1024];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let mut seen = seen;
        seen.body = buf.drain(..content_length).collect();

        let reply = {
            let mut st = state.lock().unwrap();
            check_credentials(&mut st, &seen);
            let by_id = seen
                .header("x-request-id")
                .and_then(|id| st.by_id.remove(id));
            st.seen.push(seen);
            by_id
                .or_else(|| st.replies.pop_front())
                .or_else(|| st.default_reply.clone())
        };
        let reply = reply.unwrap_or_else(|| {
            Reply::json(500, r#"{"error":{"message":"mock has no reply queued"}}"#)
        });
        match write_reply(&mut sock, &reply).await {
            Written::Done => {}
            Written::Cut => return,
            Written::Broken => {
                state.lock().unwrap().broken_writes += 1;
                return;
            }
        }
    }
}

fn check_credentials(st: &mut MockState, seen: &Seen) {
    let mut everything = seen.target.clone();
    for (n, v) in &seen.headers {
        everything.push_str(n);
        everything.push_str(v);
    }
    everything.push_str(&String::from_utf8_lossy(&seen.body));
    for secret in &st.forbidden {
        if everything.contains(secret.as_str()) {
            st.violations.push(format!(
                "a client credential reached the upstream: {} {}",
                seen.method, seen.target
            ));
        }
    }
    let auth = seen.header("authorization");
    let goog = seen.header("x-goog-api-key");
    let ok = auth == Some(&format!("Bearer {OPENAI_KEY}")) && goog.is_none()
        || goog == Some(GEMINI_KEY) && auth.is_none();
    if !ok {
        st.violations.push(format!(
            "the upstream did not get exactly the real key: {} {}",
            seen.method, seen.target
        ));
    }
    if seen.target.contains("key=") {
        st.violations.push(format!(
            "a key query parameter reached the upstream: {}",
            seen.target
        ));
    }
}

enum Written {
    Done,
    /// The reply asked for a cut.
    Cut,
    /// A write failed: the reader went away.
    Broken,
}

async fn write_reply(sock: &mut TcpStream, reply: &Reply) -> Written {
    tokio::time::sleep(reply.head_delay).await;
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        let len: usize = reply.pieces.iter().map(Vec::len).sum();
        head.push_str(&format!("content-length: {len}\r\n"));
    }
    head.push_str("\r\n");
    if sock.write_all(head.as_bytes()).await.is_err() {
        return Written::Broken;
    }
    for (i, piece) in reply.pieces.iter().enumerate() {
        if reply.cut_after == Some(i) {
            let _ = sock.shutdown().await;
            return Written::Cut;
        }
        if !reply.gap.is_zero() {
            tokio::time::sleep(reply.gap).await;
        }
        if piece.is_empty() {
            continue;
        }
        let data = if reply.chunked {
            let mut d = format!("{:x}\r\n", piece.len()).into_bytes();
            d.extend_from_slice(piece);
            d.extend_from_slice(b"\r\n");
            d
        } else {
            piece.clone()
        };
        if sock.write_all(&data).await.is_err() || sock.flush().await.is_err() {
            return Written::Broken;
        }
        // Give the gateway a chance to read this piece on its own.
        tokio::task::yield_now().await;
    }
    if reply.cut_after.is_some_and(|c| c >= reply.pieces.len()) {
        let _ = sock.shutdown().await;
        return Written::Cut;
    }
    if reply.chunked && sock.write_all(b"0\r\n\r\n").await.is_err() {
        return Written::Broken;
    }
    Written::Done
}

/// Options for a test gateway.
pub struct Opts {
    pub raw: RawConfig,
}

/// Tollgate started in-process against a mock upstream, with its own temp dir and database.
pub struct Harness {
    pub mock: MockUpstream,
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub client: reqwest::Client,
    pub raw: RawConfig,
    /// The configuration file the gateway reloads (`start_with_file`), if any.
    pub config_file: Option<PathBuf>,
    /// With `store.backend = "postgres"` (`start_pg_with`): the test's own database, dropped
    /// with the harness.
    pub pg: Option<std::sync::Arc<tollgate::store::postgres::testing::TestDb>>,
}

/// Which store a parameterised test runs on ([`on_both_stores!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite file under the test's temp dir.
    Sqlite,
    /// A PostgreSQL database of the test's own on the machine's server.
    Postgres,
}

/// Define a test once and run it on both stores: `on_both_stores! { #[tokio::test] async fn
/// name(backend: Backend) { … } }` makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($(#[$attr:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports, reason = "the body's imports are the file's")]
            use super::*;

            async fn run($backend: Backend) $body

            $(#[$attr])*
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            $(#[$attr])*
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
}

/// A config pointing both providers at `upstream`, with the database under `dir`.
pub fn test_config(upstream: &str, dir: &Path) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.server.listen = "127.0.0.1:0".parse().unwrap();
    raw.server.shutdown_grace_secs = 5;
    raw.store.path = dir.join("tollgate.db");
    // Limits out of the way; the quota tests set their own.
    raw.limits.daily_tokens = 1_000_000_000_000;
    raw.limits.monthly_tokens = 1_000_000_000_000;
    raw.limits.requests_per_minute = 1_000_000;
    raw.providers = vec![
        ProviderConfig {
            name: "openai".into(),
            kind: ProviderKind::Openai,
            prefix: "/openai".into(),
            upstream: upstream.to_string(),
            api_key_env: "OPENAI_API_KEY".into(),
            unknown_endpoints: Default::default(),
        },
        ProviderConfig {
            name: "gemini".into(),
            kind: ProviderKind::Gemini,
            prefix: "/gemini".into(),
            upstream: upstream.to_string(),
            api_key_env: "GEMINI_API_KEY".into(),
            unknown_endpoints: Default::default(),
        },
    ];
    let prices: toml::Table = toml::from_str(
        r#"
        [pricing."gpt-4o"]
        input = 2.5
        cached_input = 1.25
        output = 10.0
        [pricing."gpt-4o-mini"]
        input = 0.15
        cached_input = 0.075
        output = 0.6
        [pricing."gemini-2.5-flash"]
        input = 0.30
        cached_input = 0.075
        output = 2.50
        [pricing."text-embedding-3-small"]
        input = 0.02
        output = 0.0
        "#,
    )
    .unwrap();
    raw.pricing = prices["pricing"].clone().try_into().unwrap();
    raw
}

pub fn test_env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some(OPENAI_KEY.into()),
        "GEMINI_API_KEY" => Some(GEMINI_KEY.into()),
        "JWT_SECRET" => Some(JWT_SECRET.into()),
        "TOLLGATE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
        _ => None,
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Start with a config adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw = test_config(&mock.url(), dir.path());
        tweak(&mut raw);
        let config = Config::from_raw(raw.clone(), &test_env).expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = tollgate::serve::start_on(config, listener)
            .await
            .expect("gateway starts");
        Harness::around(mock, dir, raw, running, None)
    }

    /// Run `sql` (statements without parameters) on the gateway's database, whichever it is,
    /// also while the gateway is stopped.
    pub fn exec(&self, sql: &str) {
        match &self.pg {
            Some(db) => {
                pg_sync(db.url(), sql, |c, sql| async move {
                    c.batch_execute(&sql).await.unwrap();
                });
            }
            None => self.db_conn().execute_batch(sql).unwrap(),
        }
    }

    /// The rows of `sql`, every column read as text (write the query so that each column is
    /// text, or NULL, on both SQLite and PostgreSQL), on whichever database the gateway uses.
    pub fn text_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.pg {
            Some(db) => pg_text_rows(db.url(), sql),
            None => {
                let conn = self.db_conn();
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n).map(|i| r.get::<_, Option<String>>(i)).collect()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
        }
    }

    /// The controls the store keeps for `user` (read as the admin API reads them), whatever
    /// the backend.
    pub async fn stored_controls(&self, user: &str) -> Option<tollgate::quota::UserControls> {
        let (today, month_start) = self.ledger().seed_days();
        let page = self
            .running()
            .store
            .users_page(tollgate::store::UsersQuery {
                search: Some(user.to_string()),
                sort: tollgate::store::UserSort::default(),
                desc: false,
                limit: 100,
                offset: 0,
                today,
                month_start,
                plan: None,
            })
            .await
            .unwrap();
        page.users
            .into_iter()
            .find(|u| u.id == user)
            .map(|u| u.controls)
    }

    /// [`Harness::start_with`] on the store `backend` names.
    pub async fn start_on(backend: Backend, tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        match backend {
            Backend::Sqlite => Harness::start_with(tweak).await,
            Backend::Postgres => Harness::start_pg_with(tweak).await,
        }
    }

    /// [`Harness::start_with`] on PostgreSQL: a database of its own (made now, dropped with
    /// the harness) in `DATABASE_URL`, `store.backend = "postgres"`.
    pub async fn start_pg_with(tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        let db = std::sync::Arc::new(tollgate::store::postgres::testing::TestDb::create().await);
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw = test_config(&mock.url(), dir.path());
        raw.store.backend = tollgate::config::StoreBackend::Postgres;
        tweak(&mut raw);
        let running = start_pg(&raw, &db).await;
        let mut h = Harness::around(mock, dir, raw, running, None);
        h.pg = Some(db);
        h
    }

    fn around(
        mock: MockUpstream,
        dir: tempfile::TempDir,
        raw: RawConfig,
        running: Running,
        config_file: Option<PathBuf>,
    ) -> Harness {
        Harness {
            mock,
            addr: running.addr,
            running: Some(running),
            dir,
            db: raw.store.path.clone(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            raw,
            config_file,
            pg: None,
        }
    }

    /// Start from a config file, `gateway.toml` in the temp dir (adjusted by `tweak`), which
    /// the gateway watches and reloads; secrets come from [`test_env`].
    pub async fn start_with_file(tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        Harness::start_with_file_on(Backend::Sqlite, tweak).await
    }

    /// [`Harness::start_with_file`] on the store `backend` names (PostgreSQL: a database of
    /// its own, its URL in the environment the gateway and its reloads read).
    pub async fn start_with_file_on(
        backend: Backend,
        tweak: impl FnOnce(&mut RawConfig),
    ) -> Harness {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw = test_config(&mock.url(), dir.path());
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                raw.store.backend = tollgate::config::StoreBackend::Postgres;
                Some(std::sync::Arc::new(
                    tollgate::store::postgres::testing::TestDb::create().await,
                ))
            }
        };
        tweak(&mut raw);
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, config_toml(&raw)).unwrap();
        let url = pg.as_ref().map(|db| db.url().to_string());
        let env = move |name: &str| match (name, &url) {
            ("DATABASE_URL", Some(url)) => Some(url.clone()),
            (other, _) => test_env(other),
        };
        let running = start_from_file(&file, env).await;
        let mut h = Harness::around(mock, dir, raw, running, Some(file));
        h.pg = pg;
        h
    }

    /// The running gateway.
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the gateway is running")
    }

    /// Replace the config file with `raw`, the way editors save: a new file renamed over it.
    pub fn write_config(&self, raw: &RawConfig) {
        self.write_config_text(&config_toml(raw));
    }

    /// Replace the config file with `text` (a new file renamed over it).
    pub fn write_config_text(&self, text: &str) {
        let file = self
            .config_file
            .as_ref()
            .expect("started with a config file");
        let tmp = file.with_extension("toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    }

    /// Every `admin_audit` row, newest first.
    pub fn audit_rows(&self) -> Vec<tollgate::store::AuditRow> {
        if let Some(db) = &self.pg {
            return pg_sync(db.url(), "", |client, _| async move {
                tollgate::store::postgres::audit::audit_page(&client, None, None, 1_000)
                    .await
                    .unwrap()
            });
        }
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        tollgate::store::sqlite::audit::audit_page(&conn, None, None, 1_000).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `POST` `body` to an OpenAI path with `jwt` as the bearer API key.
    pub async fn post_openai(
        &self,
        path: &str,
        jwt: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(jwt)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST` `body` to a Gemini path with `jwt` in `x-goog-api-key`.
    pub async fn post_gemini(
        &self,
        path: &str,
        jwt: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-goog-api-key", jwt)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A valid JWT for `sub`; registered with the mock as a credential it must never see.
    pub fn token(&self, sub: &str) -> String {
        let secret = tollgate::config::Secret::new(JWT_SECRET);
        let t = tollgate::auth::mint(
            &secret,
            &self.raw.auth,
            sub,
            false,
            Duration::from_secs(3600),
            None,
            None,
        )
        .expect("mint");
        self.mock.forbid(&t);
        t
    }

    /// A valid JWT for `sub` whose plan claim (`auth.plan_claim`) is `plan`; registered with
    /// the mock as a credential it must never see.
    pub fn plan_token(&self, sub: &str, plan: &str) -> String {
        let t = process::plan_jwt(&self.raw, sub, plan);
        self.mock.forbid(&t);
        t
    }

    /// The running gateway's quota ledger.
    pub fn ledger(&self) -> std::sync::Arc<tollgate::quota::Ledger> {
        std::sync::Arc::clone(
            &self
                .running
                .as_ref()
                .expect("the gateway is running")
                .ledger,
        )
    }

    /// Operators' changes to users, committed with their audit rows and applied to the
    /// running gateway's next call, as the admin API makes them.
    pub fn actions(&self) -> tollgate::admin::UserActions {
        let running = self.running.as_ref().expect("the gateway is running");
        tollgate::admin::UserActions::new(
            std::sync::Arc::clone(&running.store),
            std::sync::Arc::clone(&running.ledger),
        )
    }

    /// A writable connection to the gateway's database (for operator actions).
    pub fn db_conn(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// Stop the gateway and start a new one on the same database and upstream.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Some(db) = &self.pg {
            let running = start_pg(&self.raw, db).await;
            self.addr = running.addr;
            self.running = Some(running);
            return;
        }
        if let Some(file) = &self.config_file {
            let running = start_from_file(file, test_env).await;
            self.addr = running.addr;
            self.running = Some(running);
            return;
        }
        let config = Config::from_raw(self.raw.clone(), &test_env).expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = tollgate::serve::start_on(config, listener)
            .await
            .expect("gateway restarts");
        self.addr = running.addr;
        self.running = Some(running);
    }

    /// Stop the gateway gracefully (every row flushed).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Every usage row, oldest first (call after `stop`, or use `wait_rows`).
    pub fn rows(&self) -> Vec<Row> {
        match &self.pg {
            Some(db) => read_pg_rows(db.url()),
            None => read_rows(&self.db),
        }
    }

    /// Wait until at least `n` rows are committed (the writer commits in the background).
    pub async fn wait_rows(&self, n: usize) -> Vec<Row> {
        for _ in 0..400 {
            let rows = self.rows();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rows = self.rows();
        panic!("expected {n} rows, found {}: {rows:#?}", rows.len());
    }
}

/// `raw` as gateway.toml text.
pub fn config_toml(raw: &RawConfig) -> String {
    toml::to_string(raw).unwrap()
}

/// Start a gateway from `file`, reloadable, with secrets from [`test_env`].
async fn start_from_file(
    file: &Path,
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> Running {
    let config = Config::load_with(file, &env).expect("valid test config file");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tollgate::serve::start_on_with(
        config,
        listener,
        Options {
            config_path: None,
            env: Some(Arc::new(env)),
        },
    )
    .await
    .expect("gateway starts")
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `token_usage` row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub request_id: String,
    pub user_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub endpoint: String,
    pub streamed: bool,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost_nano_usd: Option<i64>,
    pub usage_source: String,
    pub outcome: String,
}

impl Row {
    /// (input, cached, output, reasoning, source)
    pub fn usage(&self) -> (i64, i64, i64, i64, &str) {
        (
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            &self.usage_source,
        )
    }
}

pub fn read_rows(db: &Path) -> Vec<Row> {
    if !db.exists() {
        return Vec::new();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT request_id, user_id, provider, model, endpoint, streamed, status, input_tokens,
                    cached_input_tokens, output_tokens, reasoning_tokens, total_tokens, cost_nano_usd,
                    usage_source, outcome FROM token_usage ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            request_id: r.get(0)?,
            user_id: r.get(1)?,
            provider: r.get(2)?,
            model: r.get(3)?,
            endpoint: r.get(4)?,
            streamed: r.get::<_, i64>(5)? != 0,
            status: r.get(6)?,
            input_tokens: r.get(7)?,
            cached_input_tokens: r.get(8)?,
            output_tokens: r.get(9)?,
            reasoning_tokens: r.get(10)?,
            total_tokens: r.get(11)?,
            cost_nano_usd: r.get(12)?,
            usage_source: r.get(13)?,
            outcome: r.get(14)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A gateway on the PostgreSQL database `db`, its URL in `DATABASE_URL` (other secrets from
/// [`test_env`]).
pub async fn start_pg(
    raw: &RawConfig,
    db: &std::sync::Arc<tollgate::store::postgres::testing::TestDb>,
) -> Running {
    let url = db.url().to_string();
    let env = move |name: &str| match name {
        "DATABASE_URL" => Some(url.clone()),
        other => test_env(other),
    };
    let config = Config::from_raw(raw.clone(), &env).expect("valid test config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tollgate::serve::start_on_with(
        config,
        listener,
        Options {
            config_path: None,
            env: Some(Arc::new(env)),
        },
    )
    .await
    .expect("gateway starts on PostgreSQL")
}

/// Run `f` with a client of the PostgreSQL database at `url` on a thread of its own (callers
/// may be inside the test's runtime, or past the gateway's stop).
fn pg_sync<T, F, Fut>(url: &str, sql: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            f(client, sql).await
        })
    })
    .join()
    .unwrap()
}

/// Every call row in the PostgreSQL database at `url`, oldest first (as [`read_rows`]).
/// The rows of `sql` on the PostgreSQL database at `url`, every column as text.
pub fn pg_text_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    pg_sync(url, sql, |c, sql| async move {
        c.query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect()
    })
}

pub fn read_pg_rows(url: &str) -> Vec<Row> {
    pg_sync(url, "", |client, _| async move {
        let table = client
            .query_opt("SELECT to_regclass('token_usage')::text", &[])
            .await
            .unwrap()
            .and_then(|r| r.get::<_, Option<String>>(0));
        if table.is_none() {
            return Vec::new();
        }
        client
            .query(
                "SELECT request_id, user_id, provider, model, endpoint, streamed, status, \
                     input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, \
                     total_tokens, cost_nano_usd, usage_source, outcome FROM token_usage \
                     ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| Row {
                request_id: r.get(0),
                user_id: r.get(1),
                provider: r.get(2),
                model: r.get(3),
                endpoint: r.get(4),
                streamed: r.get(5),
                status: r.get(6),
                input_tokens: r.get(7),
                cached_input_tokens: r.get(8),
                output_tokens: r.get(9),
                reasoning_tokens: r.get(10),
                total_tokens: r.get(11),
                cost_nano_usd: r.get(12),
                usage_source: r.get(13),
                outcome: r.get(14),
            })
            .collect()
    })
}

/// Read a response body to the end, or the error that ended it.
pub async fn read_all(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub fn bytes(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// `GET {base}/me/usage` with `jwt` as the bearer key, as JSON.
pub async fn me_usage(client: &reqwest::Client, base: &str, jwt: &str) -> serde_json::Value {
    client
        .get(format!("{base}/me/usage"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
