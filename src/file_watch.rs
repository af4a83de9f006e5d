//! Watching files the gateway re-reads while it runs (gateway.toml, the listeners' TLS
//! certificates): each file polled with its content compared (notify's `PollWatcher`), which
//! also sees a file replaced by renaming a copy over it — an inotify watch of the directory
//! would wake a thread on every write of the SQLite file that usually sits next to them. A
//! burst of changes makes one call of the handler, once the files have been quiet for
//! [`DEBOUNCE`].

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often the watched files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the files must stay quiet after a change before the handler runs: editors write a
/// file in several steps, and a renewal writes a certificate and its key one after the other.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Call `on_change` after each quiet burst of events on `paths` that `relevant` keeps, until
/// `stop` changes or its sender is gone. `what` names the files in the error of a watch that
/// cannot be set up.
pub fn watch_files<F, Fut>(
    paths: &[PathBuf],
    what: &str,
    relevant: impl Fn(&notify::Event) -> bool + Send + 'static,
    mut stop: watch::Receiver<bool>,
    mut on_change: F,
) -> Result<JoinHandle<()>, String>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    use notify::Watcher as _;

    // Capacity 1: a pending wake-up already stands for every event after it.
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && relevant(&event)
        {
            let _ = tx.try_send(());
        }
    };
    let poll = notify::Config::default()
        .with_poll_interval(POLL_INTERVAL)
        .with_compare_contents(true);
    let mut watcher =
        notify::PollWatcher::new(handler, poll).map_err(|e| format!("cannot watch {what}: {e}"))?;
    for path in paths {
        watcher
            .watch(path, notify::RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
    }
    Ok(tokio::spawn(async move {
        // Owned by the task: the watch ends with it.
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { break },
                _ = stop.changed() => break,
            }
            // Wait for the files to be quiet.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            if *stop.borrow() {
                break;
            }
            on_change().await;
        }
    }))
}
