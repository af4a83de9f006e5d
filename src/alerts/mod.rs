//! Alerts: `[[alerts]]` rules watched off the request path, recorded once per subject and
//! window in the `alerts` table, and delivered to `[[webhooks]]`.
//!
//! The rules and webhooks as gateway.toml writes them, and their validation, are
//! [`crate::config::alerts`] (the configuration owns what the file may say).
//! - [`watch`]: the [`Tap`](watch::Tap) the writer feeds with every written row, and the
//!   [`Watcher`](watch::Watcher) task that evaluates the rules in force (hot reload applies at
//!   its next pass) against the store's totals and the tap's counts.
//! - [`deliver`]: signed webhook POSTs, retried with backoff in a bounded pool of tasks.
//!
//! Nothing here runs on a call's path: the tap is a short lock per written batch on the
//! writer's thread, and everything else is the watcher's own task.

pub mod deliver;
pub mod watch;

use std::sync::Arc;

use tokio::sync::watch as signal;

use crate::metrics::Metrics;
use crate::quota::Ledger;
use crate::reload::Reloader;
use crate::store::Store;
use crate::upstream::UpstreamClient;

/// Start the watcher: it runs until `stop` turns true. `gateway` names this gateway in alerts
/// about its own traffic.
#[allow(clippy::too_many_arguments, reason = "the handles the watcher reads")]
pub fn start(
    tap: Arc<watch::Tap>,
    store: Arc<dyn Store>,
    ledger: Arc<Ledger>,
    reloader: Reloader,
    metrics: Arc<Metrics>,
    client: UpstreamClient,
    gateway: String,
    stop: signal::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let sender = deliver::Sender::new(client, Arc::clone(&store), Arc::clone(&metrics));
    let watcher = watch::Watcher::new(store, ledger, reloader, metrics, sender, tap, gateway);
    tokio::spawn(watcher.run(stop))
}
