//! The real `tollgate` binary as a child process, for the tests that need one (crashes,
//! resource limits, soaks): a config on free loopback ports, start and wait for `/healthz`,
//! what the kernel says about the process.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::config::RawConfig;

use super::{GEMINI_KEY, JWT_SECRET, OPENAI_KEY, config_toml, test_config};

/// A test config for a child process: both providers at `upstream`, the database in `dir`, the
/// proxy and admin listeners on free ports, no file watch; written to `dir/gateway.toml` after
/// `tweak`. Returns it with the proxy's port.
pub fn write_config(
    upstream: &str,
    dir: &Path,
    tweak: impl FnOnce(&mut RawConfig),
) -> (RawConfig, u16) {
    let port = free_port();
    let mut raw = test_config(upstream, dir);
    raw.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    raw.admin.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    raw.server.watch_config = false;
    tweak(&mut raw);
    std::fs::write(dir.join("gateway.toml"), config_toml(&raw)).unwrap();
    (raw, port)
}

/// A JWT for `sub` under `raw`'s `[auth]`.
pub fn jwt(raw: &RawConfig, sub: &str) -> String {
    tollgate::auth::mint(
        &tollgate::config::Secret::new(JWT_SECRET),
        &raw.auth,
        sub,
        false,
        Duration::from_secs(3600),
        None,
        None,
    )
    .unwrap()
}

/// A JWT for `sub` on the plan `plan` (its `auth.plan_claim`) under `raw`'s `[auth]`.
pub fn plan_jwt(raw: &RawConfig, sub: &str, plan: &str) -> String {
    tollgate::auth::mint_claims(
        &tollgate::config::Secret::new(JWT_SECRET),
        &raw.auth,
        &tollgate::auth::MintClaims {
            sub,
            admin: false,
            ttl: Duration::from_secs(3600),
            email: None,
            name: None,
            plan: Some(plan),
        },
    )
    .unwrap()
}

/// An admin's JWT (subject `ops`) under `raw`'s `[auth]`.
pub fn admin_jwt(raw: &RawConfig) -> String {
    tollgate::auth::mint(
        &tollgate::config::Secret::new(JWT_SECRET),
        &raw.auth,
        "ops",
        true,
        Duration::from_secs(3600),
        None,
        None,
    )
    .unwrap()
}

/// SIGTERM, and whether the process then exited 0.
pub fn stop(child: &mut Child) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap().success()
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Open file descriptors of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the binary on `config` and wait until it answers `/healthz`.
pub fn start_gateway(dir: &Path, port: u16) -> Child {
    start_gateway_under(dir, port, &[])
}

/// [`start_gateway`] under a wrapper command (`prlimit --nofile=… --`).
pub fn start_gateway_under(dir: &Path, port: u16, wrapper: &[&str]) -> Child {
    start_gateway_with(dir, port, wrapper, &[])
}

/// [`start_gateway_under`] with more environment variables (`DATABASE_URL`).
pub fn start_gateway_with(dir: &Path, port: u16, wrapper: &[&str], env: &[(&str, &str)]) -> Child {
    let mut child = spawn_gateway(dir, wrapper, env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return child;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
            panic!("the gateway exited at start ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tollgate serve --config gateway.toml` in `dir` (under `wrapper`, with the test secrets and
/// `env`), its log appended to `dir/gateway.log`; not waited for.
pub fn spawn_gateway(dir: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_tollgate"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tollgate")),
    };
    cmd.current_dir(dir)
        .env_clear()
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("GEMINI_API_KEY", GEMINI_KEY)
        .env("JWT_SECRET", JWT_SECRET)
        .envs(env.iter().copied())
        .args(["serve", "--config", "gateway.toml"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
