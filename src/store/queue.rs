//! The store's row queue and its writer thread, whatever the database: the request path hands a
//! finished [`UsageRow`] to a bounded queue with a `try_send` — it never blocks and never waits
//! for the disk or the network — and one thread writes the rows in batches through a [`Sink`]
//! (the SQLite file, or PostgreSQL).
//!
//! A call that will be forwarded first reserves its row's room ([`Queue::reserve`]); when the
//! writer is so far behind that no room can be promised, the call is refused before forwarding
//! (503) instead of being served unrecorded. Reservations may take the queue only up to
//! [`refusal_headroom`] rows short of full, so the rows of refusals ([`Queue::record`],
//! unreserved) still find room; past that they are dropped and counted ([`Queue::stats`]) —
//! they consumed nothing upstream. The writer blocks for a batch's first row, lingers
//! (`store.commit_interval_ms`) to let the batch fill, and hands up to `batch_max` rows to the
//! sink, which writes them with everything they add to in one transaction. A transient failure
//! (a busy or full disk, a database that went away) is retried with backoff; rows are only lost
//! when the store is stopping and the sink keeps refusing them, or when the sink refuses a row
//! outright (both counted as failed and logged). Once a batch is written, the call journal's
//! entries of its rows are closed; a row given up leaves its entry for the next start.
//!
//! [`WriterThread::close`] stops the writer even while [`Queue`] clones are still alive: it
//! writes everything already queued, stops the sink and the journal, and joins the thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::JournalMode;
use crate::store::journal::{DirLock, Journal, JournalThread};
use crate::store::{OpenCall, RowObserver, StoreError, UsageRow, WriterStats};

/// Where the writer thread puts its batches.
pub trait Sink: Send + 'static {
    type Error: fmt::Display;

    /// Write `batch` and everything it adds to, all or nothing. `batch_id` is the same for
    /// every attempt at one batch and never repeats otherwise: a sink that cannot tell whether
    /// a failed attempt was committed (a connection lost during the commit) uses it to write a
    /// batch once.
    fn write(&mut self, batch: &[UsageRow], batch_id: u64) -> Result<(), Self::Error>;

    /// Whether `error` may go away on its own (retry the batch) or is the rows' fault (write
    /// them one by one, give up on the one refused).
    fn is_transient(&self, error: &Self::Error) -> bool;

    /// The writer has written its last batch.
    fn stopped(&mut self) {}
}

/// How the store runs. [`Queue::open`] takes the two figures gateway.toml sets; the rest has
/// defaults that tests may shorten.
#[derive(Clone, Debug)]
pub struct Options {
    /// How a call's journal entry is kept before it is forwarded (`store.journal`).
    pub journal: JournalMode,
    /// Rows that may wait for the writer before [`Queue::record`] starts dropping them.
    pub queue_capacity: usize,
    /// Most rows committed in one transaction.
    pub batch_max: usize,
    /// How long one SQLite call waits for a lock held by another connection before it fails
    /// with `SQLITE_BUSY` (which the writer then retries).
    pub busy_timeout: Duration,
    /// Longest pause between two retries of a failing batch.
    pub max_backoff: Duration,
    /// Retries of a failing batch once the store is stopping, after which its rows are given
    /// up (and logged as lost). While running, the writer retries without limit.
    pub retries_when_stopping: u32,
    /// After the first row of a batch, how long the writer keeps collecting rows before it
    /// commits. Every commit costs an fsync (`synchronous=FULL`) and a rollup upsert per key,
    /// so a few milliseconds of patience turn many tiny transactions into a few large ones.
    /// Nobody waits for it: the request path has already moved on.
    pub linger: Duration,
    /// Told about every batch the writer has written (committed or given up), on the writer's
    /// thread, off the request path: how `metrics` counts calls.
    pub observer: Option<Arc<dyn RowObserver>>,
    /// A gateway (`true`): take the call journal's directory for this process and record what
    /// an earlier run left in it. A tool that only changes accounts or reads (`tollgate admin`)
    /// leaves the journal alone — it belongs to the gateway that may be running beside it.
    pub owns_journal: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            journal: JournalMode::Durable,
            queue_capacity: 65_536,
            batch_max: 4_096,
            busy_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            retries_when_stopping: 8,
            linger: Duration::from_millis(50),
            observer: None,
            owns_journal: true,
        }
    }
}

/// A cheap, cloneable handle for recording rows.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    capacity: usize,
    /// The call journal (`None` with `store.journal = "off"`).
    journal: Option<Journal>,
}

/// The part of the queue reservations never take: room for the rows of refusals while the
/// writer is behind: a sixteenth of the queue (4,096 rows at the default 65,536), at least one.
pub fn refusal_headroom(capacity: usize) -> usize {
    (capacity / 16).max(1).min(capacity.saturating_sub(1))
}

/// The writer thread; `close` flushes every queued row and joins it.
pub struct WriterThread {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Stopped after the writer, once every row that closes an entry is committed.
    journal: Option<JournalThread>,
    /// The call journal's directory, this process's until the writer is dropped.
    _dir_lock: Option<DirLock>,
}

enum Msg {
    /// Boxed so the channel's preallocated slots stay small (16 bytes, not a whole row).
    Row(Box<UsageRow>),
    /// Sent by [`WriterThread::close`]: commit what is queued and exit.
    Stop,
}

/// Counters shared by the handles and the writer.
struct Shared {
    /// Rows handed to the writer and not yet committed (or given up).
    pending: AtomicUsize,
    /// Rooms reserved by calls in flight and not yet used ([`crate::store::RowSlot`]).
    reserved: Arc<AtomicUsize>,
    dropped: AtomicU64,
    failed: AtomicU64,
    committed: AtomicU64,
    /// Set once the writer has been told to stop; later rows are refused.
    closing: AtomicBool,
    /// Rate limit for the "queue full" error: ms since `started` of the last report.
    last_drop_report_ms: AtomicU64,
    dropped_at_last_report: AtomicU64,
    started: Instant,
}

/// At most one "rows dropped" error per this many milliseconds.
const DROP_REPORT_INTERVAL_MS: u64 = 10_000;

impl Queue {
    /// Start the writer thread on `sink`. `journal` (with its thread) is the call journal the
    /// rows close, `None` with `store.journal = "off"`.
    pub fn start<S: Sink>(
        sink: S,
        options: Options,
        journal: Option<Journal>,
        journal_thread: Option<JournalThread>,
        dir_lock: Option<DirLock>,
    ) -> Result<(Queue, WriterThread), StoreError> {
        let capacity = options.queue_capacity.max(1);
        // Room for every row and the stop message.
        let (tx, rx) = mpsc::sync_channel(capacity.saturating_add(1));
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            reserved: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            last_drop_report_ms: AtomicU64::new(0),
            dropped_at_last_report: AtomicU64::new(0),
            started: Instant::now(),
        });
        let mut seed = [0_u8; 8];
        // Without randomness, the clock: batch ids only need to differ between processes.
        if getrandom::fill(&mut seed).is_err() {
            seed = jiff::Timestamp::now().as_nanosecond().to_le_bytes()[..8]
                .try_into()
                .unwrap_or_default();
        }
        let writer = Writer {
            sink,
            next_batch_id: u64::from_le_bytes(seed) >> 1,
            rx,
            shared: Arc::clone(&shared),
            batch_max: options.batch_max.max(1),
            max_backoff: options.max_backoff,
            retries_when_stopping: options.retries_when_stopping,
            linger: options.linger,
            observer: options.observer,
            journal: journal.clone(),
            held: std::collections::VecDeque::new(),
            stop_seen: false,
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-store".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the store writer thread: {e}"))
            })?;
        let store = Queue {
            tx: tx.clone(),
            shared: Arc::clone(&shared),
            capacity,
            journal,
        };
        Ok((
            store,
            WriterThread {
                tx,
                shared,
                thread: Some(thread),
                journal: journal_thread,
                _dir_lock: dir_lock,
            },
        ))
    }

    /// Queue a row without a reservation (a refusal's); never blocks. Returns false (and counts a
    /// drop) when the queue is full or the store is closing.
    pub fn record(&self, row: UsageRow) -> bool {
        match self.take_room(self.capacity) {
            Some(slot) => self.record_reserved(slot, row),
            None => {
                self.count_drop("queue full");
                false
            }
        }
    }

    /// Room for one row of a call about to be forwarded, or `None` when the queue (less
    /// [`refusal_headroom`]) is full or the store is closing. Never blocks.
    pub fn reserve(&self) -> Option<crate::store::RowSlot> {
        self.take_room(self.capacity - refusal_headroom(self.capacity))
    }

    /// Take room for one row if fewer than `limit` rows are queued, being written or reserved.
    fn take_room(&self, limit: usize) -> Option<crate::store::RowSlot> {
        if self.shared.closing.load(Ordering::Acquire) {
            return None;
        }
        // Counting the reservation first makes concurrent takers see each other; `pending` is
        // raised before `reserved` is lowered when a slot is used, so the sum never dips.
        let reserved = self.shared.reserved.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = crate::store::RowSlot::counted(Arc::clone(&self.shared.reserved));
        if reserved + self.shared.pending.load(Ordering::Acquire) > limit {
            return None; // dropping `slot` gives the room back
        }
        Some(slot)
    }

    /// A new journal id, or `None` when the journal is off.
    pub fn journal_id(&self) -> Option<u64> {
        self.journal.as_ref().map(Journal::next_id)
    }

    /// Write `call`'s journal entry and, with `store.journal = "durable"`, wait until it is on
    /// the disk. Fails when the store is closing or the journal cannot keep the entry (the disk
    /// refuses the write or the fsync).
    pub async fn open_call(&self, call: OpenCall) -> Result<(), StoreError> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(StoreError::Busy("the store is closing".into()));
        }
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let ticket = journal.append(&call)?;
        if journal.waits_for_disk() {
            journal.durable(ticket).await?;
        }
        Ok(())
    }

    /// The call journal, when there is one.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Queue a row into reserved room; never blocks. Fails (and counts a drop) only when the
    /// store is closing.
    pub fn record_reserved(&self, slot: crate::store::RowSlot, row: UsageRow) -> bool {
        if self.shared.closing.load(Ordering::Acquire) {
            self.count_drop("closing");
            return false;
        }
        // Count before sending so the writer's decrement can never run first.
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        slot.release();
        match self.tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => true,
            Err(e) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                self.count_drop(match e {
                    TrySendError::Full(_) => "queue full",
                    TrySendError::Disconnected(_) => "writer stopped",
                });
                false
            }
        }
    }

    /// Rows handed over and not yet committed (queued or in the batch being written).
    pub fn queue_depth(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Rows refused by [`Queue::record`] since start.
    pub fn rows_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Rows accepted but never committed: a batch the disk kept refusing while stopping, or a
    /// row SQLite refused outright.
    pub fn rows_failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Rows committed since start.
    pub fn rows_committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    /// All of the counters at once.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            queue_depth: self.queue_depth(),
            rows_dropped: self.rows_dropped(),
            rows_failed: self.rows_failed(),
            rows_committed: self.rows_committed(),
            journal_commits: self.journal.as_ref().map_or(0, |j| j.counts().1),
            journal_entries: self.journal.as_ref().map_or(0, |j| j.counts().0),
            unavailable: false,
        }
    }

    fn count_drop(&self, why: &'static str) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.shared.last_drop_report_ms.load(Ordering::Relaxed);
        let first_ever = total == 1;
        if (first_ever || now_ms.saturating_sub(last) >= DROP_REPORT_INTERVAL_MS)
            && self
                .shared
                .last_drop_report_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self
                .shared
                .dropped_at_last_report
                .swap(total, Ordering::Relaxed);
            tracing::error!(
                reason = why,
                dropped_since_last_report = total - before,
                dropped_total = total,
                queue_depth = self.queue_depth(),
                "usage rows dropped: the store queue is full or the store is closing"
            );
        }
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("queue_depth", &self.queue_depth())
            .field("rows_dropped", &self.rows_dropped())
            .finish_non_exhaustive()
    }
}

impl WriterThread {
    /// Stop accepting rows, commit every row already queued, checkpoint the WAL, and join the
    /// writer. Works while `Queue` clones are still alive: rows they record afterwards are
    /// refused and counted as dropped.
    pub fn close(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.closing.store(true, Ordering::Release);
        // Blocks while the queue is full, which is fine: the writer is draining it. Fails only
        // if the writer is already gone.
        let _ = self.tx.send(Msg::Stop);
        if thread.join().is_err() {
            tracing::error!("the store writer thread panicked");
        }
        // Every row that could close an entry is committed now.
        if let Some(journal) = self.journal.take() {
            journal.stop();
        }
    }
}

impl Drop for WriterThread {
    /// Dropping the writer without `close` still flushes: a `?` on the way out of `main` must
    /// not lose rows.
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl fmt::Debug for WriterThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterThread")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

// === the writer thread ===

struct Writer<S> {
    sink: S,
    /// The next batch's id: a random start (so that two processes never share one), then
    /// counting.
    next_batch_id: u64,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    batch_max: usize,
    max_backoff: Duration,
    retries_when_stopping: u32,
    linger: Duration,
    observer: Option<Arc<dyn RowObserver>>,
    /// Told which entries' rows each commit made durable.
    journal: Option<Journal>,
    /// Rows taken off the queue while a batch could not be committed, to be kept in the
    /// journal (they stay counted as pending: the queue's bound still holds), committed next.
    held: std::collections::VecDeque<UsageRow>,
    /// A stop arrived among them.
    stop_seen: bool,
}

impl<S: Sink> Writer<S> {
    fn run(mut self) {
        let mut batch: Vec<UsageRow> = Vec::with_capacity(self.batch_max);
        // When the batch's first row arrived: rows are committed `linger` after it.
        let mut batch_since = Instant::now();
        let mut stopping = false;
        loop {
            let had_rows = !batch.is_empty();
            let from_held = !self.held.is_empty();
            if !stopping && batch.is_empty() && !from_held {
                // Nothing to do: block for the next message. All senders gone means nobody can
                // record any more.
                match self.rx.recv() {
                    Ok(msg) => take(msg, &mut batch, &mut stopping),
                    Err(_) => stopping = true,
                }
            } else if !stopping {
                // Rows wait for their batch to fill without the writer being woken for each one
                // (a blocked receiver costs every sender a futex wake).
                let due = batch_since + self.linger;
                let backlog = self.shared.pending.load(Ordering::Relaxed);
                let now = Instant::now();
                if due > now && backlog < self.batch_max {
                    std::thread::park_timeout(due - now);
                }
            }
            while batch.len() < self.batch_max {
                let Some(row) = self.held.pop_front() else {
                    break;
                };
                batch.push(row);
            }
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(msg) => take(msg, &mut batch, &mut stopping),
                    Err(_) => break,
                }
            }
            stopping |= self.stop_seen;
            if !had_rows && !batch.is_empty() {
                batch_since = Instant::now();
            }
            if batch.is_empty() {
                if stopping {
                    break;
                }
                continue;
            }
            let rows_due = stopping
                || from_held
                || batch.len() >= self.batch_max
                || batch_since.elapsed() >= self.linger
                || self.shared.pending.load(Ordering::Relaxed) >= self.batch_max;
            if rows_due {
                self.commit_with_retry(&batch, stopping);
                if let Some(observer) = &self.observer {
                    observer.rows_written(&batch);
                }
                self.shared
                    .pending
                    .fetch_sub(batch.len(), Ordering::Relaxed);
                batch.clear();
            }
        }
        // The queue was just seen empty: disconnect at once, so that a row recorded by a handle
        // that got past the `closing` check an instant ago is refused (and counted) rather than
        // left in a queue nobody reads.
        drop(self.rx);
        self.sink.stopped();
        tracing::debug!(
            committed = self.shared.committed.load(Ordering::Relaxed),
            "store writer stopped"
        );
    }

    /// Commit the rows `batch`, retrying transient failures with backoff: forever while
    /// running, a few times when stopping. At the first transient failure the rows are kept in
    /// the call journal (`Journal::spool`), so a kill while they wait loses none of them. A permanent failure is retried row by row so one bad
    /// row cannot take its batch down with it. The journal entries of the rows committed are
    /// closed; a row given up leaves its entry open, so the next start records it.
    fn commit_with_retry(&mut self, batch: &[UsageRow], stopping: bool) {
        let batch_id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.wrapping_add(1);
        let mut backoff = Duration::from_millis(10);
        let mut attempt: u32 = 0;
        loop {
            let error = match self.sink.write(batch, batch_id) {
                Ok(()) => {
                    self.shared
                        .committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if let Some(journal) = &self.journal {
                        journal.closed(batch.iter().filter_map(|r| r.journal_id));
                    }
                    if attempt > 0 {
                        tracing::info!(
                            rows = batch.len(),
                            attempts = attempt + 1,
                            "store: batch committed after retrying"
                        );
                    }
                    return;
                }
                Err(e) => e,
            };
            attempt += 1;
            if self.sink.is_transient(&error) {
                self.spool_waiting(batch, attempt == 1);
            }
            if !self.sink.is_transient(&error) {
                if batch.len() > 1 {
                    tracing::error!(error = %error, rows = batch.len(), "store: batch refused; writing its rows one by one");
                    for row in batch {
                        self.commit_with_retry(std::slice::from_ref(row), stopping);
                    }
                    return;
                }
                self.give_up(batch, &error);
                return;
            }
            let stopping = stopping || self.shared.closing.load(Ordering::Acquire);
            if stopping && attempt > self.retries_when_stopping {
                self.give_up(batch, &error);
                return;
            }
            tracing::warn!(
                error = %error,
                rows = batch.len(),
                attempt,
                retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "store: batch not committed; retrying"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// The rows waiting for the store (this batch the first time, and every row queued since)
    /// go into the call journal in place of their calls' entries, so a kill while the store is
    /// away records each call as it ended. The queued rows are taken off the queue for that and
    /// committed after this batch, in order.
    fn spool_waiting(&mut self, batch: &[UsageRow], first: bool) {
        let Some(journal) = &self.journal else { return };
        let mut fresh = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Row(row) => fresh.push(*row),
                Msg::Stop => self.stop_seen = true,
            }
        }
        let kept =
            if first { journal.spool(batch) } else { Ok(()) }.and_then(|()| journal.spool(&fresh));
        self.held.extend(fresh);
        if let Err(e) = kept {
            // Their open entries stay: a kill now records these calls by their estimate.
            tracing::warn!(error = %e, "store: rows waiting for the database not kept in the call journal");
        }
    }

    fn give_up(&self, batch: &[UsageRow], error: &S::Error) {
        self.shared
            .failed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let first = batch
            .first()
            .map(|r| r.request_id.as_str())
            .unwrap_or_default();
        tracing::error!(error = %error, rows = batch.len(), first_request_id = first, "store: usage rows lost");
    }
}

/// File one message into the batch being collected.
fn take(msg: Msg, batch: &mut Vec<UsageRow>, stopping: &mut bool) {
    match msg {
        Msg::Row(row) => batch.push(*row),
        Msg::Stop => *stopping = true,
    }
}
