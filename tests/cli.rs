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

// --- admin accounts ---

/// The binary, run in `dir` with only the variables given and `input` on its stdin (a pipe, so
/// `admin add` reads the password from it instead of prompting).
fn tollgate_stdin(dir: &Path, env: &[(&str, &str)], args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The operating-system user the admin commands audit as `cli:$USER`.
const OS_USER: &str = "ops-tester";
const ADMIN_ENV: &[(&str, &str)] = &[("JWT_SECRET", JWT_SECRET), ("USER", OS_USER)];
const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "tr0ub4dor & 3 -- much longer";

fn admin_add(dir: &Path, name: &str, password: &str) -> Output {
    tollgate_stdin(
        dir,
        ADMIN_ENV,
        &["admin", "add", name],
        &format!("{password}\n"),
    )
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("tollgate.db")).unwrap()
}

fn password_hash(dir: &Path, name: &str) -> Option<String> {
    use rusqlite::OptionalExtension as _;
    db(dir)
        .query_row(
            "SELECT password_hash FROM admin_accounts WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
}

/// The admin_audit rows as (actor, action, target), oldest first.
fn audit_rows(dir: &Path) -> Vec<(String, String, Option<String>)> {
    db(dir)
        .prepare("SELECT actor, action, target FROM admin_audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn audit_row(action: &str, target: &str) -> (String, String, Option<String>) {
    (
        format!("cli:{OS_USER}"),
        action.to_string(),
        Some(target.to_string()),
    )
}

/// Neither what the command printed nor any file of the store holds `password`.
fn assert_password_nowhere(dir: &Path, output: &Output, password: &str) {
    let printed = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        !printed.contains(password),
        "the password was printed:\n{printed}"
    );
    // The database, its WAL, and the call journal's segments beside it.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tollgate.db"))
        {
            continue;
        }
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    for path in files {
        {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{} holds the password in clear",
                path.display()
            );
        }
    }
}

#[test]
fn admin_add_stores_an_argon2id_hash_and_never_the_password() {
    let dir = valid_dir();
    let out = admin_add(dir.path(), "ops", PASSWORD);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "admin account \"ops\" created\n");
    assert_no_secret(&out);
    let hash = password_hash(dir.path(), "ops").expect("the account is stored");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(tollgate::admin::verify_password(&hash, PASSWORD));
    assert!(!tollgate::admin::verify_password(
        &hash,
        "correct horse battery"
    ));
    assert_password_nowhere(dir.path(), &out, PASSWORD);
    assert_eq!(audit_rows(dir.path()), vec![audit_row("admin_add", "ops")]);

    // `admin list` shows it, never signed in; no hash or password on the way.
    let out = tollgate(dir.path(), ADMIN_ENV, &["admin", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    assert!(lines[1].starts_with("ops "), "{stdout}");
    assert!(lines[1].ends_with("never"), "{stdout}");
    assert!(!stdout.contains("$argon2"), "{stdout}");
    assert_password_nowhere(dir.path(), &out, PASSWORD);

    // Adding it again fails, before any password is read, and changes nothing.
    let out = admin_add(dir.path(), "ops", NEW_PASSWORD);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "error: an account named \"ops\" exists (use `admin set-password`)\n"
    );
    assert_eq!(password_hash(dir.path(), "ops").as_deref(), Some(&*hash));
    assert_eq!(audit_rows(dir.path()).len(), 1, "a refusal is not audited");
}

#[test]
fn admin_add_refuses_a_short_password_and_a_bad_name() {
    let dir = valid_dir();
    // 11 characters (the minimum is 12, counted in characters, not bytes).
    let out = admin_add(dir.path(), "ops", "éééééééééé1");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: the password must have at least 12 characters\n"
    );
    assert_password_nowhere(dir.path(), &out, "éééééééééé1");
    let out = admin_add(dir.path(), "ops", "");
    assert_eq!(out.status.code(), Some(1), "an empty stdin is no password");
    for bad in ["bad name", "semi;colon", "", &"x".repeat(65)] {
        let out = admin_add(dir.path(), bad, PASSWORD);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(
            text(&out.stderr).starts_with("error: an account name "),
            "{bad:?}: {}",
            text(&out.stderr)
        );
        assert_password_nowhere(dir.path(), &out, PASSWORD);
    }
    // Nothing was created or audited.
    let out = tollgate(dir.path(), ADMIN_ENV, &["admin", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "no admin accounts; add one with `tollgate admin add NAME`\n"
    );
    assert!(audit_rows(dir.path()).is_empty());
}

#[test]
fn admin_set_password_changes_the_hash_and_remove_removes_the_account() {
    let dir = valid_dir();
    let out = admin_add(dir.path(), "ops.admin@corp", PASSWORD);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = password_hash(dir.path(), "ops.admin@corp").unwrap();

    let out = tollgate_stdin(
        dir.path(),
        ADMIN_ENV,
        &["admin", "set-password", "ops.admin@corp"],
        &format!("{NEW_PASSWORD}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "password of \"ops.admin@corp\" changed; its sessions ended\n"
    );
    let after = password_hash(dir.path(), "ops.admin@corp").unwrap();
    assert_ne!(after, before);
    assert!(after.starts_with("$argon2id$"), "{after}");
    assert!(tollgate::admin::verify_password(&after, NEW_PASSWORD));
    assert!(!tollgate::admin::verify_password(&after, PASSWORD));
    assert_password_nowhere(dir.path(), &out, NEW_PASSWORD);

    // A new password is held to the same rule; an unknown account is refused.
    let out = tollgate_stdin(
        dir.path(),
        ADMIN_ENV,
        &["admin", "set-password", "ops.admin@corp"],
        "too short\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        password_hash(dir.path(), "ops.admin@corp").as_deref(),
        Some(&*after)
    );
    let out = tollgate_stdin(
        dir.path(),
        ADMIN_ENV,
        &["admin", "set-password", "nobody"],
        &format!("{NEW_PASSWORD}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: no account named \"nobody\"\n");

    let out = tollgate(
        dir.path(),
        ADMIN_ENV,
        &["admin", "remove", "ops.admin@corp"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "admin account \"ops.admin@corp\" removed; its sessions ended\n"
    );
    assert_eq!(password_hash(dir.path(), "ops.admin@corp"), None);
    let out = tollgate(dir.path(), ADMIN_ENV, &["admin", "list"]);
    assert!(
        text(&out.stdout).starts_with("no admin accounts"),
        "{}",
        text(&out.stdout)
    );
    let out = tollgate(
        dir.path(),
        ADMIN_ENV,
        &["admin", "remove", "ops.admin@corp"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: no account named \"ops.admin@corp\"\n"
    );

    // One audit row per change that happened, none for the refusals.
    assert_eq!(
        audit_rows(dir.path()),
        vec![
            audit_row("admin_add", "ops.admin@corp"),
            audit_row("admin_set_password", "ops.admin@corp"),
            audit_row("admin_remove", "ops.admin@corp"),
        ]
    );
}

/// One HTTP/1.1 GET to 127.0.0.1:`port` with `Connection: close`: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    // Small bodies; a chunked one is a single chunk: keep what is between the framing lines.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines().nth(1).unwrap_or("").to_string()
    } else {
        body.to_string()
    };
    (status, body)
}

#[test]
fn serve_answers_on_the_admin_port_and_refuses_the_api_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = config_text(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{admin}"),
    );
    std::fs::write(dir.path().join("gateway.toml"), cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir.path())
        .env_clear()
        .envs(ALL_SECRETS.iter().copied())
        .args(["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the admin listener.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the admin side did not start listening"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(admin, "/api/admin/stats");
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized", "{body}");
    assert!(error["error"]["message"].is_string(), "{body}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_secret(&out);
}
