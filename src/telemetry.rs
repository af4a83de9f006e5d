//! Logging: installs the process-wide `tracing` subscriber that writes to stderr, as text or JSON
//! lines per `log.format`, filtered by `RUST_LOG` when it is set and valid, else by `log.level`.
//!
//! Lines are handed to a dedicated thread (`tracing-appender`'s non-blocking writer) that writes
//! them to stderr through a 64 KiB buffer, flushed whenever it has nothing more to write: no
//! thread that serves calls ever waits on a write to stderr, and a burst of lines costs a few
//! write calls rather than one each. The queue between them is bounded ([`LOG_QUEUE_LINES`]);
//! when stderr cannot keep up, lines are dropped rather than stall the gateway, and counted
//! ([`dropped_lines`], `tollgate_log_lines_dropped_total`).
//!
//! [`Throttle`] lets a warning that every call could repeat (a model without a price) through
//! once per key and interval.
//!
//! It only decides where events go and which pass. It never decides what is logged, and it adds
//! no fields of its own, so the rule that no token or key is ever logged stays with the callers.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines waiting for the log thread at most; past it new lines are dropped and counted.
pub const LOG_QUEUE_LINES: usize = 65_536;
/// The log thread's buffer in front of stderr.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The installed writer's count of dropped lines.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log thread alive; dropping it writes every line still queued. Hold it until the
/// process is about to exit.
#[must_use = "dropping the guard stops the log thread"]
#[derive(Debug)]
pub struct LogGuard(Option<WorkerGuard>);

impl LogGuard {
    /// Whether this guard keeps a log thread (the call to [`init`] installed the subscriber).
    pub fn is_installed(&self) -> bool {
        self.0.is_some()
    }
}

/// Install the subscriber for `cfg`. Only the first call in a process takes effect; later calls
/// (tests, a second `serve` in-process) are ignored and return an empty guard.
pub fn init(cfg: &LogConfig) -> LogGuard {
    let (filter, bad_rust_log) = filter(cfg);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            std::io::stderr(),
        ));
    let counter = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
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
    if installed.is_err() {
        return LogGuard(None);
    }
    let _ = DROPPED.set(counter);
    if bad_rust_log {
        tracing::warn!("RUST_LOG is not a valid filter; using log.level instead");
    }
    LogGuard(Some(guard))
}

/// An error and its causes, outermost first, for a log line (`client error (Connect): tcp
/// connect error: …`): hyper's errors say little by themselves. (`auth::jwks` keeps a copy: it
/// sits below this module.)
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}

/// Log lines dropped because stderr did not keep up (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
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

/// Distinct keys a [`Throttle`] remembers; later keys share one slot, so a client inventing
/// model names cannot grow it (nor get more than one line per interval for all of them).
const THROTTLE_KEYS: usize = 1024;
/// The shared slot of the keys past [`THROTTLE_KEYS`].
const OVERFLOW_KEY: &str = "\u{0}other";

/// Lets a message through once per key and interval. [`Throttle::admit`] says whether this
/// occurrence should be logged and how many were held back since the last one that was.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    seen: Mutex<HashMap<Box<str>, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    held_back: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held_back)` when this occurrence of `key` should be logged (the first one, or the
    /// first after `interval`): `held_back` occurrences were not logged since the last line.
    /// `None`: hold it back (counted for the next line).
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        if !seen.contains_key(key) && seen.len() >= THROTTLE_KEYS {
            let interval = self.interval;
            seen.retain(|_, s| now.saturating_duration_since(s.logged_at) < interval);
        }
        let key = if seen.contains_key(key) || seen.len() < THROTTLE_KEYS {
            key
        } else {
            OVERFLOW_KEY
        };
        match seen.get_mut(key) {
            Some(s) if now.saturating_duration_since(s.logged_at) < self.interval => {
                s.held_back = s.held_back.saturating_add(1);
                None
            }
            Some(s) => {
                let held_back = std::mem::take(&mut s.held_back);
                s.logged_at = now;
                Some(held_back)
            }
            None => {
                seen.insert(
                    Box::from(key),
                    Seen {
                        logged_at: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn init_twice_keeps_the_first_subscriber_without_panicking() {
        let _first = init(&LogConfig::default());
        let second = init(&LogConfig {
            level: "debug".into(),
            format: LogFormat::Json,
        });
        assert!(!second.is_installed(), "a second init installs nothing");
        tracing::info!("still logging");
    }

    #[test]
    fn a_throttle_logs_once_per_key_and_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.admit_at("gpt-x", t0), Some(0));
        assert_eq!(t.admit_at("gpt-x", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.admit_at("gpt-x", t0 + Duration::from_secs(59)), None);
        assert_eq!(t.admit_at("gpt-y", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(t.admit_at("gpt-x", t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(t.admit_at("gpt-x", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn a_throttle_keeps_a_bounded_number_of_keys() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..THROTTLE_KEYS {
            assert_eq!(t.admit_at(&format!("m{i}"), t0), Some(0));
        }
        // Every further name shares one slot: one line per interval for all of them.
        assert_eq!(t.admit_at("invented-1", t0), Some(0));
        assert_eq!(t.admit_at("invented-2", t0), None);
        assert_eq!(t.admit_at("invented-3", t0), None);
        assert!(t.seen.lock().len() <= THROTTLE_KEYS + 1);
        // Once the interval has passed, old keys make room for new ones.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(t.admit_at("fresh", later), Some(0));
        assert!(t.seen.lock().len() <= THROTTLE_KEYS + 1);
    }
}
