//! `tollgate demo` as a newcomer runs it: the built binary on the shipped gateway.toml, with a
//! cleared environment (no provider key, no JWT secret), its temp dir in the test's own. What it
//! prints is what the test uses: the dashboard's address and sign-in, the database's path and
//! the curl command; the test signs in to the admin API with them and checks that the traffic
//! the demo drove is there, then stops it with SIGTERM.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns unwrap too: a panic is the test's failure report"
)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");

/// A demo child process and what it printed so far.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: PathBuf,
}

impl Demo {
    /// `tollgate demo ARGS` in `tmp` (its TMPDIR), nothing else in its environment.
    fn start(tmp: &Path, args: &[&str]) -> Demo {
        let stderr = tmp.join("demo.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(tmp)
            .env_clear()
            .env("TMPDIR", tmp)
            .args(["demo", "--config", SHIPPED])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Read stdout until a line contains `marker` (within `secs`).
    fn wait_for(&mut self, marker: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(marker);
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no {marker:?} on stdout within {secs}s:\n{}\nstderr:\n{}",
                    self.stdout.join("\n"),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    /// What follows `label` on the line that holds it.
    fn after(&self, label: &str) -> String {
        self.stdout
            .iter()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.stdout.join("\n")))
    }

    /// SIGTERM; the exit status, the rest of stdout.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.stdout.extend(rest);
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status, self.stdout, stderr)
    }
}

/// The admin API as the dashboard uses it: a cookie session.
struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    async fn sign_in(base: &str, name: &str, password: &str) -> Admin {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let base = base.trim_end_matches('/').to_string();
        let resp = client
            .post(format!("{base}/api/admin/login"))
            .json(&json!({"username": name, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sign-in with the printed credentials");
        Admin { client, base }
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_its_traffic_signs_in_with_what_it_prints_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(
        tmp.path(),
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
    );
    demo.wait_for("Press Ctrl-C to stop", 120);

    // The throwaway database is in the temp dir while the demo runs.
    let database = demo.after("Database:");
    let (db, note) = database.split_once(" (").unwrap();
    assert_eq!(note, "deleted when the demo stops)");
    let db = PathBuf::from(db);
    assert!(db.starts_with(tmp.path()), "{}", db.display());
    assert!(db.is_file(), "{}", db.display());

    // The printed sign-in works.
    let dashboard = demo.after("Dashboard:");
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{dashboard}");
    let sign_in = demo.after("Sign in:");
    let (name, password) = sign_in.split_once(" / ").unwrap();
    assert_eq!(name, "demo");
    assert!(password.len() >= 12, "{password}");
    let admin = Admin::sign_in(&dashboard, name, password).await;

    // Every demo user is listed with usage today; carol with her small limit.
    let users = admin.get("/api/admin/users").await;
    let users = users["users"].as_array().unwrap();
    for id in ["alice", "bob", "carol"] {
        let user = users
            .iter()
            .find(|u| u["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {users:?}"));
        assert!(user["today"]["calls"].as_i64().unwrap() >= 5, "{user}");
        assert!(
            user["today"]["total_tokens"].as_i64().unwrap() > 0,
            "{user}"
        );
        assert!(
            user["today"]["cost_nano_usd"].as_i64().unwrap() > 0,
            "{user}"
        );
        assert!(user["email"].as_str().unwrap().starts_with(id), "{user}");
    }
    let carol = users.iter().find(|u| u["id"] == "carol").unwrap();
    assert_eq!(carol["limits"]["daily_tokens"], 1000, "{carol}");

    // Their calls: both providers, streamed on both, embeddings, and carol's one refusal.
    let mut calls = Vec::new();
    for id in ["alice", "bob", "carol"] {
        let usage = admin
            .get(&format!("/api/admin/user/{id}/usage?limit=100"))
            .await;
        calls.extend(usage["calls"].as_array().unwrap().iter().cloned());
    }
    let refused: Vec<&Value> = calls.iter().filter(|c| c["status"] != 200).collect();
    assert_eq!(
        refused.len(),
        1,
        "one refusal, nothing else failed: {refused:?}"
    );
    assert_eq!(refused[0]["user_id"], "carol");
    assert_eq!(refused[0]["status"], 429);
    assert_eq!(refused[0]["outcome"], "refused_quota");
    let served: Vec<&Value> = calls.iter().filter(|c| c["status"] == 200).collect();
    assert!(
        served
            .iter()
            .all(|c| c["usage_source"] == "reported" && c["outcome"] == "complete"),
        "{served:?}"
    );
    let streamed: BTreeSet<&str> = served
        .iter()
        .filter(|c| c["streamed"] == true)
        .map(|c| c["provider"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, BTreeSet::from(["gemini", "openai"]));
    let endpoints: BTreeSet<(&str, &str)> = served
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap(),
                c["endpoint"].as_str().unwrap(),
            )
        })
        .collect();
    for wanted in [("openai", "embeddings"), ("gemini", "embedContent")] {
        assert!(
            endpoints
                .iter()
                .any(|e| e.0 == wanted.0 && e.1.contains(wanted.1)),
            "{wanted:?} in {endpoints:?}"
        );
    }

    // The demo's alert rule fired for carol (the watcher passes at least every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = admin.get("/api/admin/alerts").await;
        let carols = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "user_limit" && a["subject"] == "carol");
        if carols {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no user_limit alert for carol: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The printed curl command's token works on the printed proxy.
    let token_line = demo.after("Authorization: Bearer");
    let token = token_line.trim_end_matches(['\'', '\\', ' ']);
    let url = demo.after("curl ");
    let url = url.trim_end_matches(['\\', ' ']);
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["usage"]["total_tokens"].as_i64().unwrap() > 0,
        "{answer}"
    );

    let (status, stdout, stderr) = demo.stop();
    assert!(status.success(), "exit {status:?}\nstderr:\n{stderr}");
    assert_eq!(
        stdout.last().map(String::as_str),
        Some("Stopped. The demo's database is deleted.")
    );
    // Its temp dir is gone, and nothing else was left in TMPDIR.
    assert!(!db.parent().unwrap().exists(), "{}", db.display());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "demo.stderr")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The provider keys made for the run were never printed; stderr stayed quiet.
    let all = format!("{}\n{stderr}", stdout.join("\n"));
    assert!(
        !all.contains("sk-demo-") && !all.contains("AIza-demo-"),
        "{all}"
    );
    assert!(stderr.trim().is_empty(), "{stderr}");
}

#[tokio::test]
async fn keep_leaves_the_database_with_every_call_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(
        tmp.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--keep",
        ],
    );
    demo.wait_for("Press Ctrl-C to stop", 120);
    let database = demo.after("Database:");
    let (db, note) = database.split_once(" (").unwrap();
    assert_eq!(note, "kept when the demo stops: --keep)");
    let db = PathBuf::from(db);
    let (status, stdout, stderr) = demo.stop();
    assert!(status.success(), "exit {status:?}\nstderr:\n{stderr}");
    let last = stdout.last().unwrap();
    assert!(
        last.contains(&db.display().to_string()),
        "the kept path is printed: {last}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (calls, users, refused): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT user_id), sum(status = 429) FROM token_usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(calls >= 15, "{calls}");
    assert_eq!((users, refused), (3, 1));
}

#[test]
fn a_taken_port_or_an_exposed_address_is_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(tmp.path())
            .env_clear()
            .env("TMPDIR", tmp.path())
            .args(["demo", "--config", SHIPPED])
            .args(args)
            .output()
            .unwrap()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = run(&["--listen", "127.0.0.1:0", "--admin-listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} is taken")) && stderr.contains("--admin-listen"),
        "{stderr}"
    );

    let out = run(&["--listen", "0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");

    // Nothing was left behind.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    drop(taken);
}
