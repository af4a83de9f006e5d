//! Logging: installs the process-wide `tracing` subscriber that writes to stderr, as text or JSON
//! lines per `log.format`, filtered by `RUST_LOG` when it is set and valid, else by `log.level`.
//!
//! It only decides where events go and which pass. It never decides what is logged, and it adds
//! no fields of its own, so the rule that no token or key is ever logged stays with the callers.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the subscriber for `cfg`. Only the first call in a process takes effect; later calls
/// (tests, a second `serve` in-process) are ignored.
pub fn init(cfg: &LogConfig) {
    let (filter, bad_rust_log) = filter(cfg);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A failed `try_init` means a subscriber is already installed: keep it.
    let installed = match cfg.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if installed.is_ok() && bad_rust_log {
        tracing::warn!("RUST_LOG is not a valid filter; using log.level instead");
    }
}

/// `RUST_LOG` when it is set and parses, else `log.level`, else `info` (validation refuses a bad
/// `log.level`, so the last fallback only covers a configuration that skipped it). The flag says
/// that `RUST_LOG` was set but did not parse.
fn filter(cfg: &LogConfig) -> (EnvFilter, bool) {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    if let Some(filter) = rust_log.as_deref().and_then(|v| EnvFilter::try_new(v).ok()) {
        return (filter, false);
    }
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    (filter, rust_log.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_keeps_the_first_subscriber_without_panicking() {
        init(&LogConfig::default());
        init(&LogConfig {
            level: "debug".into(),
            format: LogFormat::Json,
        });
        tracing::info!("still logging");
    }
}
