//! The WAL checkpointer: a thread of its own, with its own connection, that copies committed
//! pages from the WAL into the database file every [`CHECKPOINT_INTERVAL`].
//!
//! Why not SQLite's automatic checkpoint: it runs inside the commit that crosses the threshold,
//! on the store's one writer thread — and calls wait for that thread (their journal entries).
//! A checkpoint of a large WAL copies thousands of pages and fsyncs the database file: tens of
//! milliseconds in which every call waited (p99 of 38–74 ms with `store.journal = "process"`).
//! A `PASSIVE` checkpoint on another connection runs beside the writer without taking its lock
//! (SQLite's WAL lets one checkpointer and one writer work at once), so the writer only appends
//! to the WAL; when the log has grown past [`RESTART_FRAMES`] the checkpointer briefly takes the
//! writer's lock to catch up the last pages, so that the log starts over and stays bounded.
//! Durability is unchanged: a commit is durable in the WAL; a checkpoint only moves it.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// How often the WAL is checkpointed.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// WAL frames (pages) past which the log is started over: about 16 MiB.
const RESTART_FRAMES: i64 = 4096;
/// How long a `RESTART` checkpoint may wait for a reader still on an older snapshot (a long CSV
/// export) before it gives up until the next round: while it waits, the writer waits too.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// One round: copy what the WAL holds into the database without waiting for anyone. A passive
/// checkpoint never catches up with a writer that keeps committing, and the WAL is only started
/// over from its beginning once a checkpoint has caught up — so when the log has grown past
/// [`RESTART_FRAMES`], a `RESTART` checkpoint takes the writer's lock for the few pages written
/// since this round's passive pass, and the writer's next commit starts the log over
/// (`journal_size_limit` then trims the file). A busy or partial checkpoint is finished by the
/// next round.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    // (busy, frames in the WAL, frames checkpointed)
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if log > RESTART_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// The running checkpointer; [`Checkpointer::stop`] (or dropping it) ends the thread.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start checkpointing the database at `path` (already in WAL mode).
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(RESTART_WAIT)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tollgate-ckpt".into())
            .spawn(move || {
                // Until told to stop (or the store is gone).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(e) = checkpoint(&conn) {
                        tracing::warn!(error = %e, "store: WAL checkpoint failed; retried");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for a checkpoint in progress to end.
    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
