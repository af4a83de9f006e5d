//! Loading gateway.toml plus `TOLLGATE_*` overrides, and the messages of a configuration that is
//! refused. The environment is only ever changed inside `figment::Jail`, which serialises the
//! tests that do so and restores the environment afterwards.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns unwrap too: a panic is the test's failure report"
)]
#![expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures must return figment::Error, which is large"
)]

use std::path::{Path, PathBuf};

use figment::Jail;
use figment::providers::Format as _;
use tollgate::config::{Config, ConfigError, RawConfig, Secret, UnknownEndpoints};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml")
}

/// Set the secrets the shipped gateway.toml names.
fn set_secrets(jail: &mut Jail) {
    jail.set_env("JWT_SECRET", "config-test-secret-0123456789abcdef");
    jail.set_env("OPENAI_API_KEY", "sk-config-test-openai");
    jail.set_env("GEMINI_API_KEY", "config-test-gemini");
}

/// A small valid file: one provider, everything else default.
const MINIMAL: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "https://api.openai.com"
api_key_env = "OPENAI_API_KEY"
"#;

/// Load `file` (written into the jail) and return the error message.
fn refused(jail: &mut Jail, file: &str) -> String {
    jail.create_file("gateway.toml", file).unwrap();
    match Config::load(Path::new("gateway.toml")) {
        Ok(_) => panic!("expected {file:?} to be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_shipped_gateway_toml_loads_with_its_secrets_set() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let config = Config::load(&shipped()).map_err(|e| e.to_string())?;
        assert_eq!(config.raw.server.listen.to_string(), "127.0.0.1:5002");
        assert_eq!(config.raw.admin.listen.to_string(), "127.0.0.1:3001");
        let names: Vec<&str> = config.providers.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["openai", "gemini"]);
        assert_eq!(
            config.providers[0].api_key.expose(),
            "sk-config-test-openai"
        );
        assert_eq!(
            config.providers[1].upstream_authority.as_str(),
            "generativelanguage.googleapis.com"
        );
        assert_eq!(
            config.jwt_secret,
            Some(Secret::new("config-test-secret-0123456789abcdef"))
        );
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        Ok(())
    });
}

#[test]
fn the_shipped_gateway_toml_shows_every_default_and_documents_every_key() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    let raw = RawConfig::from_figment(figment::Figment::from(figment::providers::Toml::file(
        shipped(),
    )))
    .unwrap();
    let shipped = toml::Value::try_from(&raw).unwrap();
    let defaults = toml::Value::try_from(RawConfig::default()).unwrap();
    for section in ["server", "admin", "auth", "limits", "store", "log"] {
        assert_eq!(
            shipped[section], defaults[section],
            "[{section}] in gateway.toml differs from the defaults"
        );
        for key in defaults[section].as_table().unwrap().keys() {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "[{section}] {key} is not in gateway.toml"
            );
        }
    }
    for optional in ["public_key_file", "jwks_url", "issuer", "audience"] {
        assert!(
            text.contains(&format!("\n# {optional} = ")),
            "auth.{optional} is not documented"
        );
    }
    for section in ["server.tls", "admin.tls"] {
        let at = text
            .find(&format!("\n# [{section}]\n"))
            .unwrap_or_else(|| panic!("[{section}] is not documented"));
        // The section's lines, up to the blank line that ends it.
        let block: String = text[at..]
            .lines()
            .skip(2)
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        for key in ["cert_file", "key_file", "handshake_timeout_ms"] {
            assert!(
                block.contains(&format!("# {key} = ")),
                "{section}.{key} is not documented"
            );
        }
    }
    // Every key line above the price table has a comment line right above it.
    let top = text.split("# ---- pricing").next().unwrap();
    let lines: Vec<&str> = top.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(lines[i - 1].starts_with('#'), "no comment above `{line}`");
        }
    }
}

#[test]
fn a_missing_provider_key_names_its_api_key_env() {
    Jail::expect_with(|jail| {
        jail.set_env("JWT_SECRET", "config-test-secret-0123456789abcdef");
        jail.set_env("OPENAI_API_KEY", ""); // empty counts as not set
        let message = Config::load(&shipped()).unwrap_err().to_string();
        assert_eq!(
            message,
            "`providers[0].api_key_env`: environment variable OPENAI_API_KEY is not set"
        );
        Ok(())
    });
}

#[test]
fn a_missing_jwt_secret_names_jwt_secret_env() {
    Jail::expect_with(|jail| {
        jail.set_env("OPENAI_API_KEY", "sk-x");
        jail.set_env("JWT_SECRET", ""); // empty counts as not set
        let message = refused(jail, MINIMAL);
        assert_eq!(
            message,
            "`auth.jwt_secret_env`: environment variable JWT_SECRET is not set"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(
            jail,
            &format!("[server]\nlisen = \"127.0.0.1:5002\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`server.lisen`: unknown key"),
            "{message}"
        );
        assert!(
            message.contains("listen"),
            "the expected keys are listed: {message}"
        );
        let message = refused(
            jail,
            &format!("[sever]\nlisten = \"127.0.0.1:5002\"\n{MINIMAL}"),
        );
        assert!(message.starts_with("`sever`: unknown key"), "{message}");
        let message = refused(jail, &format!("{MINIMAL}api_key = \"sk-in-the-file\"\n"));
        assert!(
            message.starts_with("`providers[0].api_key`: unknown key"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn a_bad_type_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(
            jail,
            &format!("[limits]\ndaily_tokens = \"lots\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`limits.daily_tokens`: invalid type"),
            "{message}"
        );
        let message = refused(
            jail,
            &format!("[server]\nlisten = \"localhost\"\n{MINIMAL}"),
        );
        assert!(message.starts_with("`server.listen`:"), "{message}");
        let message = refused(
            jail,
            &MINIMAL.replace("kind = \"openai\"", "kind = \"anthropic\""),
        );
        assert!(
            message.starts_with("`providers[0].kind`: unknown value `anthropic`"),
            "{message}"
        );
        let message = refused(jail, &format!("[auth]\nalgorithms = [\"none\"]\n{MINIMAL}"));
        assert!(
            message.starts_with("`auth.algorithms[0]`: unknown value `none`"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn an_upstream_ca_file_that_holds_no_certificate_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(
            jail,
            &format!("[server]\nupstream_ca_file = \"missing.pem\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`server.upstream_ca_file`: cannot read missing.pem"),
            "{message}"
        );
        jail.create_file("empty.pem", "not a certificate\n")?;
        let message = refused(
            jail,
            &format!("[server]\nupstream_ca_file = \"empty.pem\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`server.upstream_ca_file`: empty.pem holds no CERTIFICATE"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn unknown_endpoints_takes_forward_or_refuse_and_anything_else_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(jail, &format!("{MINIMAL}unknown_endpoints = \"block\"\n"));
        assert!(
            message.starts_with("`providers[0].unknown_endpoints`: unknown value `block`")
                && message.contains("forward")
                && message.contains("refuse"),
            "{message}"
        );
        for (value, want) in [
            (None, UnknownEndpoints::Forward),
            (Some("forward"), UnknownEndpoints::Forward),
            (Some("refuse"), UnknownEndpoints::Refuse),
        ] {
            let file = match value {
                Some(v) => format!("{MINIMAL}unknown_endpoints = \"{v}\"\n"),
                None => MINIMAL.to_string(),
            };
            jail.create_file("gateway.toml", &file)?;
            let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
            assert_eq!(config.providers[0].unknown_endpoints, want, "{value:?}");
            assert!(
                config.masked().contains(&format!(
                    "unknown_endpoints = \"{}\"",
                    if want == UnknownEndpoints::Refuse {
                        "refuse"
                    } else {
                        "forward"
                    }
                )),
                "check-config shows it"
            );
        }
        Ok(())
    });
}

#[test]
fn a_missing_provider_field_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(
            jail,
            &MINIMAL.replace("upstream = \"https://api.openai.com\"\n", ""),
        );
        assert!(
            message.starts_with("`providers[0].upstream`: missing"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn env_overrides_replace_file_values() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("TOLLGATE_SERVER__LISTEN", "0.0.0.0:6000");
        jail.set_env("TOLLGATE_LIMITS__DAILY_TOKENS", "5000");
        jail.set_env("TOLLGATE_LOG__FORMAT", "json");
        let config = Config::load(&shipped()).map_err(|e| e.to_string())?;
        assert_eq!(config.raw.server.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(config.raw.limits.daily_tokens, 5000);
        assert_eq!(config.raw.log.format, tollgate::config::LogFormat::Json);
        Ok(())
    });
}

#[test]
fn a_bad_env_override_names_the_variable() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("TOLLGATE_LIMITS__DAILY_TOKENS", "many");
        let message = Config::load(&shipped()).unwrap_err().to_string();
        assert!(
            message.starts_with("`limits.daily_tokens`: invalid type"),
            "{message}"
        );
        assert!(
            message.contains("TOLLGATE_LIMITS__DAILY_TOKENS"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_env_override_is_refused_by_name() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("TOLLGATE_SERVER__LISTN", "0.0.0.0:6000");
        let message = Config::load(&shipped()).unwrap_err().to_string();
        assert!(
            message.starts_with("`server.listn`: unknown key"),
            "{message}"
        );
        assert!(message.contains("TOLLGATE_SERVER__LISTN"), "{message}");
        Ok(())
    });
}

#[test]
fn tollgate_config_is_not_taken_for_an_override() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("TOLLGATE_CONFIG", "/somewhere/else.toml");
        Config::load(&shipped()).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn tollgate_variables_without_a_section_are_not_configuration() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        // A deployment's own variables (scripts set TOLLGATE_BIN) must not break the file.
        jail.set_env("TOLLGATE_BIN", "/usr/local/bin/tollgate");
        jail.set_env("TOLLGATE_VERSION", "1.2.3");
        jail.set_env("TOLLGATE_LIMITS__DAILY_TOKENS", "77");
        let config = Config::load(&shipped()).map_err(|e| e.to_string())?;
        assert_eq!(
            config.raw.limits.daily_tokens, 77,
            "sectioned overrides still apply"
        );
        Ok(())
    });
}

#[test]
fn a_bad_timezone_names_limits_timezone() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let message = refused(
            jail,
            &format!("[limits]\ntimezone = \"Mars/Olympus_Mons\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`limits.timezone`: unknown IANA time zone"),
            "{message}"
        );
        jail.set_env("TOLLGATE_LIMITS__TIMEZONE", "Europe/Paris");
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        assert_eq!(config.timezone.iana_name(), Some("Europe/Paris"));
        Ok(())
    });
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let err = Config::load(Path::new("/nonexistent/tollgate.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)));
    assert_eq!(
        err.to_string(),
        "configuration file /nonexistent/tollgate.toml not found"
    );
}

#[test]
fn invalid_values_name_their_key() {
    // (file content, the key the message must start with)
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nmax_request_bytes = 0\n",
            "`server.max_request_bytes`",
        ),
        (
            "[server]\nmax_header_bytes = 100\n",
            "`server.max_header_bytes`",
        ),
        (
            "[server]\nconnect_timeout_ms = 0\n",
            "`server.connect_timeout_ms`",
        ),
        ("[admin]\nlisten = \"127.0.0.1:5002\"\n", "`admin.listen`"),
        ("[auth]\nalgorithms = []\n", "`auth.algorithms`"),
        (
            "[auth]\nalgorithms = [\"RS256\"]\n",
            "`auth.public_key_file`",
        ),
        (
            "[auth]\nalgorithms = [\"RS256\"]\npublic_key_file = \"missing.pem\"\n",
            "`auth.public_key_file`",
        ),
        (
            "[auth]\nalgorithms = [\"RS256\"]\npublic_key_file = \"not-a-key.pem\"\n",
            "`auth.public_key_file`",
        ),
        (
            "[auth]\nalgorithms = [\"RS256\"]\njwks_url = \"http://login.example/jwks\"\n",
            "`auth.jwks_url`",
        ),
        (
            "[auth]\nalgorithms = [\"RS256\"]\njwks_url = \"login.example/jwks\"\n",
            "`auth.jwks_url`",
        ),
        (
            "[auth]\njwks_url = \"https://login.example/jwks\"\n",
            "`auth.jwks_url`",
        ),
        (
            "[auth]\njwks_refresh_min_secs = 0\n",
            "`auth.jwks_refresh_min_secs`",
        ),
        ("[auth]\nuser_claim = \"\"\n", "`auth.user_claim`"),
        ("[auth]\nadmin_value = \"\"\n", "`auth.admin_value`"),
        ("[auth]\nleeway_secs = 86400\n", "`auth.leeway_secs`"),
        ("[auth]\nissuer = \"\"\n", "`auth.issuer`"),
        ("[auth]\njwt_secret_env = \"\"\n", "`auth.jwt_secret_env`"),
        ("[store]\nqueue_capacity = 0\n", "`store.queue_capacity`"),
        ("[store]\npath = \"\"\n", "`store.path`"),
        ("[log]\nlevel = \"tollgate=loud\"\n", "`log.level`"),
        (
            "[server.tls]\ncert_file = \"\"\nkey_file = \"key.pem\"\n",
            "`server.tls.cert_file`",
        ),
        (
            "[server.tls]\ncert_file = \"cert.pem\"\n",
            "`server.tls.key_file`",
        ),
        (
            "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nciphers = \"x\"\n",
            "`server.tls.ciphers`",
        ),
        (
            "[admin.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nhandshake_timeout_ms = 0\n",
            "`admin.tls.handshake_timeout_ms`",
        ),
    ];
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.create_file(
            "not-a-key.pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )?;
        for (file, key) in cases {
            let message = refused(jail, &format!("{file}{MINIMAL}"));
            assert!(message.starts_with(key), "{file:?}: {message}");
        }
        Ok(())
    });
}

#[test]
fn alert_rules_and_webhooks_are_checked_by_name() {
    let hook = "[[webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example.com/t\"\n";
    // (file content, the key the message must start with, a word it must hold)
    let cases: &[(String, &str, &str)] = &[
        (
            "[[alerts]]\nkind = \"user_limit\"\nusd = 5.0\n".into(),
            "`alerts[0].usd`",
            "does not apply",
        ),
        (
            "[[alerts]]\nkind = \"user_limit\"\npercent = 80\n".into(),
            "`alerts[0].percent`",
            "list",
        ),
        (
            "[[alerts]]\nkind = \"user_limit\"\npercent = [0]\n".into(),
            "`alerts[0].percent`",
            "between",
        ),
        (
            "[[alerts]]\nkind = \"spend\"\nusd = 10.0\n".into(),
            "`alerts[0].window`",
            "day",
        ),
        (
            "[[alerts]]\nkind = \"spend\"\nwindow = \"day\"\nusd = -1.0\n".into(),
            "`alerts[0].usd`",
            "positive",
        ),
        (
            "[[alerts]]\nkind = \"refusals\"\npercent = [50]\n".into(),
            "`alerts[0].percent`",
            "one share",
        ),
        (
            "[[alerts]]\nkind = \"upstream_errors\"\npercent = 20\nminutes = 90\n".into(),
            "`alerts[0].minutes`",
            "60",
        ),
        (
            "[[alerts]]\nkind = \"store_behind\"\n[[alerts]]\nkind = \"store_behind\"\n".into(),
            "`alerts[1].name`",
            "two rules",
        ),
        (
            format!("{hook}[[alerts]]\nkind = \"store_behind\"\nwebhooks = [\"pager\"]\n"),
            "`alerts[0].webhooks`",
            "pager",
        ),
        (
            "[[webhooks]]\nurl = \"ftp://example.com/\"\n".into(),
            "`webhooks[0].url`",
            "https://",
        ),
        (format!("{hook}{hook}"), "`webhooks[1].name`", "twice"),
        (
            format!("{hook}secret_env = \"NOT_SET_ANYWHERE\"\n"),
            "`webhooks[0].secret_env`",
            "NOT_SET_ANYWHERE",
        ),
        (
            format!("{hook}url_env = \"HOOK_URL\"\n"),
            "`webhooks[0].url_env`",
            "not both",
        ),
        (
            "[[webhooks]]\nurl_env = \"NOT_SET_URL\"\n".into(),
            "`webhooks[0].url_env`",
            "NOT_SET_URL",
        ),
        (
            "[[webhooks]]\nname = \"x\"\n".into(),
            "`webhooks[0].url`",
            "must be set",
        ),
    ];
    Jail::expect_with(|jail| {
        set_secrets(jail);
        for (file, key, word) in cases {
            let message = refused(jail, &format!("{file}{MINIMAL}"));
            assert!(
                message.starts_with(key) && message.contains(word),
                "{file:?}: {message}"
            );
        }
        // An unknown kind is refused by the parser, naming the key.
        let message = refused(jail, &format!("[[alerts]]\nkind = \"vibes\"\n{MINIMAL}"));
        assert!(
            message.contains("kind") && message.contains("vibes"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn the_alert_examples_in_gateway_toml_load_when_uncommented() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    // The commented [[alerts]] and [[webhooks]] examples, uncommented.
    let start = text.find("# [[alerts]]").unwrap();
    let end = text.find("# The upstream APIs").unwrap();
    let examples: String = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        // `url_env` is the alternative to `url`: one of them.
        .filter(|l| !l.starts_with("url_env"))
        .filter(|l| {
            l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("TOLLGATE_WEBHOOK_SECRET", "whsec-config-test");
        jail.create_file("gateway.toml", &format!("{examples}{MINIMAL}"))?;
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        let kinds: Vec<&str> = config.raw.alerts.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "user_limit",
                "spend",
                "upstream_errors",
                "refusals",
                "store_behind"
            ]
        );
        assert_eq!(config.raw.webhooks.len(), 1);
        assert_eq!(
            config.webhook_secrets[0]
                .as_ref()
                .map(|s| s.expose().to_string()),
            Some("whsec-config-test".into())
        );
        let masked = config.masked();
        assert!(!masked.contains("whsec-config-test"), "{masked}");
        // A webhook URL may be a credential (Slack's are): shown as its scheme and host only.
        assert!(
            masked.contains("url = \"https://hooks.example.com/…\"")
                && !masked.contains("/tollgate"),
            "{masked}"
        );
        // Or it comes from the environment, and is checked there.
        jail.set_env(
            "HOOK_URL",
            "https://hooks.slack.com/services/T0/B0/secret-path",
        );
        jail.create_file(
            "gateway.toml",
            &format!("[[webhooks]]\nurl_env = \"HOOK_URL\"\nformat = \"slack\"\n{MINIMAL}"),
        )?;
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        assert_eq!(
            config.webhook_urls[0].expose(),
            "https://hooks.slack.com/services/T0/B0/secret-path"
        );
        assert!(
            !config.masked().contains("secret-path"),
            "{}",
            config.masked()
        );
        jail.set_env(
            "HOOK_URL",
            "ftp://hooks.slack.com/services/T0/B0/secret-path",
        );
        let message = refused(
            jail,
            &format!("[[webhooks]]\nurl_env = \"HOOK_URL\"\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`webhooks[0].url_env`") && !message.contains("secret-path"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn invalid_providers_name_their_index_and_field() {
    let second = |field: &str, value: &str| {
        let mut p = MINIMAL
            .replace("name = \"openai\"", "name = \"other\"")
            .replace("/openai", "/other");
        let line = p
            .lines()
            .find(|l| l.starts_with(&format!("{field} = ")))
            .unwrap()
            .to_string();
        p = p.replace(&line, &format!("{field} = {value}"));
        format!("{MINIMAL}{p}")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            second("upstream", "\"ftp://files.example\""),
            "`providers[1].upstream`",
        ),
        (
            second("upstream", "\"api.openai.com\""),
            "`providers[1].upstream`",
        ),
        (
            second("upstream", "\"https://user:pw@api.openai.com\""),
            "`providers[1].upstream`",
        ),
        (
            second("upstream", "\"https://api.openai.com/?a=1\""),
            "`providers[1].upstream`",
        ),
        (second("prefix", "\"/openai/\""), "`providers[1].prefix`"),
        (second("prefix", "\"openai\""), "`providers[1].prefix`"),
        (second("prefix", "\"/\""), "`providers[1].prefix`"),
        (second("prefix", "\"/a b\""), "`providers[1].prefix`"),
        (second("prefix", "\"/healthz\""), "`providers[1].prefix`"),
        (second("prefix", "\"/other//x\""), "`providers[1].prefix`"),
        (second("prefix", "\"/other/../x\""), "`providers[1].prefix`"),
        (second("prefix", "\"/other;x\""), "`providers[1].prefix`"),
        (second("prefix", "\"/other\\\\x\""), "`providers[1].prefix`"),
        (second("prefix", "\"/V1\""), "`providers[1].prefix`"),
        (second("name", "\"openai\""), "`providers[1].name`"),
        (second("name", "\"\""), "`providers[1].name`"),
        (second("api_key_env", "\"\""), "`providers[1].api_key_env`"),
        (
            second("api_key_env", "\"BAD_KEY\""),
            "`providers[1].api_key_env`",
        ),
    ];
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.set_env("BAD_KEY", "sk-with\u{7f}control");
        for (file, key) in &cases {
            let message = refused(jail, file);
            assert!(message.starts_with(key), "{file:?}: {message}");
        }
        Ok(())
    });
}

#[test]
fn a_secret_pasted_in_place_of_a_variable_name_is_not_echoed() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let pasted = "sk-proj-Abc123/+secret==";
        let message = refused(
            jail,
            &MINIMAL.replace("\"OPENAI_API_KEY\"", &format!("{pasted:?}")),
        );
        assert!(
            message.starts_with("`providers[0].api_key_env`: must be the name"),
            "{message}"
        );
        assert!(!message.contains(pasted), "{message}");
        let message = refused(
            jail,
            &format!("[auth]\njwt_secret_env = {pasted:?}\n{MINIMAL}"),
        );
        assert!(
            message.starts_with("`auth.jwt_secret_env`: must be the name"),
            "{message}"
        );
        assert!(!message.contains(pasted), "{message}");
        Ok(())
    });
}

#[test]
fn an_upstream_base_path_is_kept() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.create_file(
            "gateway.toml",
            &MINIMAL.replace("https://api.openai.com", "http://127.0.0.1:9000/base/"),
        )?;
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        let p = &config.providers[0];
        assert_eq!(
            (p.upstream_scheme.as_str(), p.upstream_authority.as_str()),
            ("http", "127.0.0.1:9000")
        );
        assert_eq!(p.upstream_base_path, "/base");
        Ok(())
    });
}

#[test]
fn an_rs256_configuration_loads_its_public_key() {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/rsa_public.pem");
    Jail::expect_with(|jail| {
        set_secrets(jail);
        jail.create_file(
            "gateway.toml",
            &format!(
                "[auth]\nalgorithms = [\"RS256\"]\npublic_key_file = {:?}\n{MINIMAL}",
                key.display().to_string()
            ),
        )?;
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        assert!(config.jwt_secret.is_none());
        assert!(config.jwt_public_key_pem.is_some());
        Ok(())
    });
}

#[test]
fn secret_debug_prints_stars() {
    let secret = Secret::new("sk-very-secret");
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
}

#[test]
fn config_debug_never_shows_a_secret() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let config = Config::load(&shipped()).map_err(|e| e.to_string())?;
        let shown = format!("{config:?}");
        for secret in [
            "config-test-secret",
            "sk-config-test-openai",
            "config-test-gemini",
        ] {
            assert!(!shown.contains(secret), "{secret} in Debug");
        }
        Ok(())
    });
}

#[test]
fn masked_shows_where_each_secret_comes_from_and_never_its_value() {
    Jail::expect_with(|jail| {
        set_secrets(jail);
        let config = Config::load(&shipped()).map_err(|e| e.to_string())?;
        let masked = config.masked();
        assert!(
            masked.contains("jwt_secret_env = \"JWT_SECRET\"  # env JWT_SECRET (set)"),
            "{masked}"
        );
        assert!(
            masked.contains("api_key_env = \"OPENAI_API_KEY\"  # env OPENAI_API_KEY (set)"),
            "{masked}"
        );
        assert!(
            masked.contains("api_key_env = \"GEMINI_API_KEY\"  # env GEMINI_API_KEY (set)"),
            "{masked}"
        );
        for secret in [
            "config-test-secret",
            "sk-config-test-openai",
            "config-test-gemini",
        ] {
            assert!(!masked.contains(secret), "{secret} in masked output");
        }
        // The masked output is the effective configuration: it loads back to the same values.
        let back: RawConfig = toml::from_str(&masked).map_err(|e| e.to_string())?;
        assert_eq!(
            toml::Value::try_from(&back).unwrap(),
            toml::Value::try_from(&config.raw).unwrap()
        );
        Ok(())
    });
}

#[test]
fn masked_says_when_the_jwt_secret_is_not_used() {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/ec_public.pem");
    Jail::expect_with(|jail| {
        jail.set_env("OPENAI_API_KEY", "sk-x");
        jail.create_file(
            "gateway.toml",
            &format!(
                "[auth]\nalgorithms = [\"ES256\"]\npublic_key_file = {:?}\n{MINIMAL}",
                key.display().to_string()
            ),
        )?;
        let masked = Config::load(Path::new("gateway.toml"))
            .map_err(|e| e.to_string())?
            .masked();
        assert!(
            masked.contains("# env JWT_SECRET (not used: HS256 is not in auth.algorithms)"),
            "{masked}"
        );
        Ok(())
    });
}

#[test]
fn warnings_point_at_risky_settings() {
    Jail::expect_with(|jail| {
        jail.set_env("JWT_SECRET", "tiny-s3cret");
        jail.set_env("OPENAI_API_KEY", "sk-x");
        jail.create_file(
            "gateway.toml",
            &format!(
                "[admin]\nlisten = \"0.0.0.0:3001\"\n{}",
                MINIMAL.replace("https://api.openai.com", "http://api.openai.com")
            ),
        )?;
        let warnings = Config::load(Path::new("gateway.toml"))
            .map_err(|e| e.to_string())?
            .warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].starts_with("auth.jwt_secret_env:"));
        assert!(warnings[1].starts_with("admin.listen:"));
        assert!(warnings[2].starts_with("providers[0].upstream:"));
        assert!(
            !warnings.iter().any(|w| w.contains("tiny-s3cret")),
            "the secret never appears"
        );
        Ok(())
    });
}

#[test]
fn plans_without_a_default_plan_are_warned_about() {
    Jail::expect_with(|jail| {
        jail.set_env("JWT_SECRET", "a-long-enough-secret-0123456789abcdef");
        jail.set_env("OPENAI_API_KEY", "sk-x");
        jail.create_file(
            "gateway.toml",
            &format!("{MINIMAL}\n[plans.free]\nmodels = [\"gpt-4o-mini*\"]\n"),
        )?;
        let warnings = Config::load(Path::new("gateway.toml"))
            .map_err(|e| e.to_string())?
            .warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("limits.default_plan: not set;"),
            "{warnings:?}"
        );
        jail.create_file(
            "gateway.toml",
            &format!(
                "[limits]\ndefault_plan = \"free\"\n{MINIMAL}\n[plans.free]\nmodels = [\"gpt-4o-mini*\"]\n"
            ),
        )?;
        let config = Config::load(Path::new("gateway.toml")).map_err(|e| e.to_string())?;
        assert_eq!(config.warnings(), Vec::<String>::new());
        assert_eq!(config.plans.default_plan().map(|p| &*p.name), Some("free"));
        Ok(())
    });
}
