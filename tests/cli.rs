//! The `tollgate` binary as an operator runs it: exit codes, what goes to stdout and stderr, and
//! that no secret is ever printed. Each test runs the built binary in a temp dir with a cleared
//! environment, so nothing from the developer's shell leaks in.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns unwrap too: a panic is the test's failure report"
)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::auth::Verifier;
use tollgate::config::{AuthConfig, Secret};

const JWT_SECRET: &str = "cli-test-secret-0123456789abcdef-XYZ";
const OPENAI_KEY: &str = "sk-cli-test-openai-REAL";
const GEMINI_KEY: &str = "cli-test-gemini-REAL";

fn config_text(dir: &Path, listen: &str, admin: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[admin]
listen = "{admin}"

[store]
path = {db:?}

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "https://api.openai.com"
api_key_env = "OPENAI_API_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
prefix = "/gemini"
upstream = "https://generativelanguage.googleapis.com"
api_key_env = "GEMINI_API_KEY"
"#,
        db = dir.join("tollgate.db").display().to_string(),
    )
}

/// A temp dir holding `gateway.toml` with `text`.
fn dir_with(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), text).unwrap();
    dir
}

fn valid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "127.0.0.1:5002", "127.0.0.1:3001");
    std::fs::write(dir.path().join("gateway.toml"), text).unwrap();
    dir
}

/// The binary, run in `dir` with only the variables given.
fn tollgate(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

const ALL_SECRETS: &[(&str, &str)] = &[
    ("JWT_SECRET", JWT_SECRET),
    ("OPENAI_API_KEY", OPENAI_KEY),
    ("GEMINI_API_KEY", GEMINI_KEY),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_secret(output: &Output) {
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for (_, secret) in ALL_SECRETS {
        assert!(!all.contains(secret), "a secret value was printed:\n{all}");
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

// --- check-config ---

#[test]
fn check_config_prints_the_masked_configuration_and_never_a_secret() {
    let dir = valid_dir();
    let out = tollgate(dir.path(), ALL_SECRETS, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# gateway.toml is valid."), "{stdout}");
    assert!(
        stdout.contains("jwt_secret_env = \"JWT_SECRET\"  # env JWT_SECRET (set)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("api_key_env = \"OPENAI_API_KEY\"  # env OPENAI_API_KEY (set)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("daily_tokens = 100000"),
        "defaults are shown: {stdout}"
    );
    assert_no_secret(&out);
}

#[test]
fn check_config_reads_the_file_named_by_tollgate_config_and_the_flag_wins() {
    let dir = valid_dir();
    std::fs::rename(
        dir.path().join("gateway.toml"),
        dir.path().join("other.toml"),
    )
    .unwrap();
    let env = [ALL_SECRETS, &[("TOLLGATE_CONFIG", "other.toml")]].concat();
    let out = tollgate(dir.path(), &env, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("# other.toml is valid."));
    let out = tollgate(
        dir.path(),
        &env,
        &["check-config", "--config", "missing.toml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: configuration file missing.toml not found\n"
    );
}

#[test]
fn check_config_applies_env_overrides() {
    let dir = valid_dir();
    let env = [ALL_SECRETS, &[("TOLLGATE_LIMITS__DAILY_TOKENS", "777")]].concat();
    let out = tollgate(dir.path(), &env, &["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("daily_tokens = 777"));
}

#[test]
fn check_config_with_an_unknown_key_exits_2_naming_it() {
    let dir = dir_with("[server]\nlisen = \"127.0.0.1:5002\"\n");
    let out = tollgate(dir.path(), ALL_SECRETS, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: `server.lisen`: unknown key"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_config_with_a_missing_provider_key_exits_2_naming_it() {
    let dir = valid_dir();
    let out = tollgate(
        dir.path(),
        &[("JWT_SECRET", JWT_SECRET), ("OPENAI_API_KEY", OPENAI_KEY)],
        &["check-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: `providers[1].api_key_env`: environment variable GEMINI_API_KEY is not set\n"
    );
    assert_no_secret(&out);
}

#[test]
fn check_config_prints_warnings_on_stderr() {
    let dir = valid_dir();
    let env = [
        ("JWT_SECRET", "short"),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("GEMINI_API_KEY", GEMINI_KEY),
    ];
    let out = tollgate(dir.path(), &env, &["check-config"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).starts_with("warning: auth.jwt_secret_env:"),
        "{}",
        text(&out.stderr)
    );
}

// --- serve ---

#[test]
fn serve_with_an_invalid_config_exits_2_naming_the_key() {
    let dir = dir_with("[limits]\ntimezone = \"Nowhere/Atlantis\"\n");
    let out = tollgate(dir.path(), ALL_SECRETS, &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: `limits.timezone`:"), "{stderr}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_answers_healthz_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let text_cfg = config_text(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{admin}"),
    );
    std::fs::write(dir.path().join("gateway.toml"), text_cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir.path())
        .env_clear()
        .envs(ALL_SECRETS.iter().copied())
        .args(["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the listener, then ask /healthz without credentials.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not start listening"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_secret(&out);
}

#[test]
fn serve_exits_1_when_its_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(dir.path().join("gateway.toml"), cfg).unwrap();
    let out = tollgate(dir.path(), ALL_SECRETS, &["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("server.listen"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret(&out);
}

// --- token ---

#[test]
fn token_mints_a_jwt_the_verifier_accepts() {
    let dir = valid_dir();
    // Only the JWT secret: `token` needs no provider key.
    let out = tollgate(
        dir.path(),
        &[("JWT_SECRET", JWT_SECRET)],
        &["token", "--sub", "user-42", "--ttl", "15m"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.trim_end();
    assert_eq!(
        stdout,
        format!("{token}\n"),
        "stdout is the token and a newline"
    );
    let verifier =
        Verifier::new(&AuthConfig::default(), Some(&Secret::new(JWT_SECRET)), None).unwrap();
    let caller = verifier.verify(token).unwrap();
    assert_eq!(&*caller.user_id, "user-42");
    assert!(!caller.is_admin);
    let exp = claims_of(token)["exp"].as_u64().unwrap();
    assert!(
        exp.abs_diff(now() + 900) <= 5,
        "exp {exp} is not about now + 15m"
    );
    assert!(claims_of(token).get("role").is_none());
}

#[test]
fn token_with_admin_sets_the_admin_claim() {
    let dir = valid_dir();
    let args = [
        "token",
        "--sub",
        "ops",
        "--admin",
        "--ttl",
        "7d",
        "--email",
        "ops@example.com",
        "--name",
        "Ops",
    ];
    let out = tollgate(dir.path(), &[("JWT_SECRET", JWT_SECRET)], &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let verifier =
        Verifier::new(&AuthConfig::default(), Some(&Secret::new(JWT_SECRET)), None).unwrap();
    let caller = verifier.verify(&token).unwrap();
    assert!(caller.is_admin);
    assert_eq!(caller.email.as_deref(), Some("ops@example.com"));
    assert_eq!(caller.name.as_deref(), Some("Ops"));
    let claims = claims_of(&token);
    assert_eq!(claims["role"], "admin");
    assert!(claims["exp"].as_u64().unwrap().abs_diff(now() + 7 * 86_400) <= 5);
}

#[test]
fn token_defaults_to_one_hour() {
    let dir = valid_dir();
    let out = tollgate(
        dir.path(),
        &[("JWT_SECRET", JWT_SECRET)],
        &["token", "--sub", "u"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let claims = claims_of(text(&out.stdout).trim());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3_600
    );
}

#[test]
fn token_without_the_secret_exits_2_naming_jwt_secret_env() {
    let dir = valid_dir();
    let out = tollgate(
        dir.path(),
        &[("OPENAI_API_KEY", OPENAI_KEY)],
        &["token", "--sub", "u"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: `auth.jwt_secret_env`: environment variable JWT_SECRET is not set\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn token_with_a_bad_ttl_or_no_sub_exits_2() {
    let dir = valid_dir();
    let out = tollgate(
        dir.path(),
        &[("JWT_SECRET", JWT_SECRET)],
        &["token", "--sub", "u", "--ttl", "2w"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--ttl"), "{}", text(&out.stderr));
    let out = tollgate(dir.path(), &[("JWT_SECRET", JWT_SECRET)], &["token"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--sub"));
}

#[test]
fn token_refuses_when_hs256_is_not_accepted() {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/rsa_public.pem");
    let dir = dir_with(&format!(
        "[auth]\nalgorithms = [\"RS256\"]\npublic_key_file = {:?}\n",
        key.display().to_string()
    ));
    let out = tollgate(
        dir.path(),
        &[("JWT_SECRET", JWT_SECRET)],
        &["token", "--sub", "u"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: `auth.algorithms`:"),
        "{}",
        text(&out.stderr)
    );
}
