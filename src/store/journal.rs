//! The call journal: an append-only file that holds every call about to be forwarded until its
//! row is committed, so that a gateway killed mid-call still records the call (at the next
//! start) and counts it against its user's limits.
//!
//! It belongs to no database: a backend keeps rows, this keeps the promise that a call the
//! upstream may serve has either its row or its entry. It lives next to the database
//! (`<store.path>-calls/`), as segment files of [`SEGMENT_BYTES`] each.
//!
//! - **Append, on the serving thread.** [`Journal::append`] encodes the entry (a checksummed,
//!   length-prefixed record) and writes it at the segment's end with one `pwrite`: no thread hop,
//!   no database transaction. With `store.journal = "process"` that is all the call waits for —
//!   the entry is in the operating system's hands, so a killed process loses nothing.
//! - **Group fsync, on the journal's thread.** With `"durable"`, the call then awaits
//!   [`Journal::durable`]: the thread `tollgate-journal` runs `fdatasync` on the segment for
//!   everything written so far, and every call whose entry that covers goes on; calls that arrive
//!   during one fsync share the next.
//! - **Closed by the row.** The store's writer calls [`Journal::closed`] once the rows carrying
//!   the entries' ids are committed (durably, with `"durable"`); a row that could not be written
//!   leaves its entry open.
//! - **Rows kept while the database is away.** When a batch cannot be committed for a while
//!   (PostgreSQL unreachable), the writer writes each waiting row into the journal in place of
//!   its call's entry ([`Journal::spool`]): the next start records the call as it ended.
//! - **Bounded on disk.** When a segment is full the next append starts a new one and first
//!   copies into it every entry still open (at most the calls in flight), so every older segment
//!   can go: at once with `"process"`, after the new segment's first fsync with `"durable"`.
//!   Calls that stream for an hour pin no segment.
//! - **Read back at start.** [`read_dir`] returns every entry the segments hold (a torn last
//!   record ends its segment); the backend keeps those whose row it does not have, as
//!   `recovered` rows, then [`clear_dir`] removes the segments.
//!
//! A failed write leaves the segment's length where it was (the next record overwrites the torn
//! bytes); a failed fsync fails every call waiting on it, and the next append starts a new
//! segment, since what the failed one holds can no longer be trusted to reach the disk.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::config::JournalMode;
use crate::provider::Endpoint;
use crate::store::{OpenCall, StoreError, UsageRow};
use crate::usage::{MAX_COST_NANO_USD_PER_CALL, MAX_TOKENS_PER_CALL, Outcome, Usage, UsageSource};

/// A segment past this many bytes is followed by a new one.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The longest record [`read_dir`] believes: a length past it is damage, not an entry.
const MAX_RECORD_BYTES: u32 = 1 << 20;

/// A call about to be forwarded.
const KIND_OPEN: u8 = 1;
/// A call that ended, with its exact row: written by the store's writer while it cannot commit
/// the row (the database is away), so that a kill meanwhile records the call as it ended, not
/// as its estimate. Replaces the call's open entry.
const KIND_FINISHED: u8 = 2;

/// `u32` length + `u32` CRC-32 of the payload.
const HEADER_BYTES: usize = 8;

/// Segment files: `<20-digit number>.calls`.
const SEGMENT_SUFFIX: &str = ".calls";

/// The journal's directory for the database at `db`: `<db>-calls`, beside it.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-calls");
    db.with_file_name(name)
}

/// The journal's directory, held by one process: the gateway that records what is left in it
/// and appends to it. Released when dropped (or when the process dies: an advisory `flock` on
/// `<dir>/lock`), so a second gateway on the same `store.path` is refused instead of recording
/// the first one's calls in flight as lost.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take `dir` (created if missing), or fail naming it when another process holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        fs::create_dir_all(dir)
            .map_err(|e| io_error(dir, "cannot create the call journal's directory", &e))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open the call journal's lock", &e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
                "another Tollgate process is using the call journal in {} (a gateway with the \
                 same store.path is running)",
                dir.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(io_error(&path, "cannot lock the call journal", &e))
            }
        }
    }
}

/// The running journal. Cheap to share (`Arc` inside); [`Journal::stop`] ends its thread.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    mode: JournalMode,
    state: Mutex<State>,
    /// The journal thread sleeps here until something is written (or it must stop).
    work: Condvar,
    /// What the last fsync covered, for the calls awaiting [`Journal::durable`].
    synced: watch::Sender<Synced>,
    next_id: AtomicU64,
    /// Entries appended, and fsyncs that covered at least one: the calls one fsync covers.
    entries: AtomicU64,
    commits: AtomicU64,
}

/// Sequence numbers (one per append) the journal thread has settled.
#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    /// Every append up to this one is on the disk.
    ok: u64,
    /// Every append up to this one waited for an fsync that failed.
    failed: u64,
}

struct State {
    /// The segment being appended to.
    current: Segment,
    /// Older segments still holding an open entry's only copy (none after a rotation's copy).
    older: Vec<Segment>,
    /// Segments whose open entries were copied forward: unlinked once the append numbered
    /// `.0` is on the disk (at once with `"process"`).
    retired: Vec<(u64, Segment)>,
    /// Where each open entry is: its journal id → segment number, offset, length.
    open: HashMap<u64, Place, foldhash::fast::RandomState>,
    /// Appends so far (the sequence number of the latest).
    written: u64,
    /// The last fsync failed: the next append starts a new segment.
    broken: bool,
    stopping: bool,
}

struct Segment {
    number: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// The directory entry of a new segment is made durable with its first fsync.
    dir_synced: bool,
}

#[derive(Clone, Copy)]
struct Place {
    segment: u64,
    offset: u64,
    len: u32,
}

/// A written entry, to wait on with [`Journal::durable`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

/// What [`read_dir`] found.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Every entry, once each (a copy carried forward is the same entry), oldest id first.
    pub calls: Vec<OpenCall>,
    /// The exact rows of the calls that ended before the kill but could not be committed
    /// ([`Journal::spool`]), by journal id: recorded instead of the estimate.
    pub finished: HashMap<u64, UsageRow>,
    /// The highest journal id seen.
    pub max_id: u64,
    /// Segments whose end was damaged or torn (a record cut short by the kill, most often).
    pub torn_segments: usize,
}

impl Leftovers {
    /// The row to record for `call`, an entry whose row the database lacks: the exact row when
    /// the call finished and was spooled, else its reservation as an estimate (`recovered`).
    pub fn row_for(&mut self, call: OpenCall) -> UsageRow {
        match self.finished.remove(&call.journal_id) {
            Some(row) => row,
            None => call.recovered_row(),
        }
    }
}

impl Journal {
    /// Start the journal in `dir` (created if missing), which must hold no segment
    /// ([`read_dir`] and [`clear_dir`] first). Ids start above `min_id` and above the clock's
    /// `unix ms << 20`, so they never repeat across restarts. `None` for `JournalMode::Off`.
    pub fn start(
        dir: &Path,
        mode: JournalMode,
        min_id: u64,
    ) -> Result<Option<(Journal, JournalThread)>, StoreError> {
        if mode == JournalMode::Off {
            return Ok(None);
        }
        fs::create_dir_all(dir)
            .map_err(|e| io_error(dir, "cannot create the call journal's directory", &e))?;
        let current = Segment::create(dir, 1)?;
        sync_dir(dir).map_err(|e| io_error(dir, "cannot sync the call journal's directory", &e))?;
        let clock = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0) << 20;
        let (synced, _) = watch::channel(Synced::default());
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            mode,
            state: Mutex::new(State {
                current: Segment {
                    dir_synced: true,
                    ..current
                },
                older: Vec::new(),
                retired: Vec::new(),
                open: HashMap::default(),
                written: 0,
                broken: false,
                stopping: false,
            }),
            work: Condvar::new(),
            synced,
            next_id: AtomicU64::new(clock.max(min_id.saturating_add(1))),
            entries: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("tollgate-journal".into())
            .spawn(move || worker.run())
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the call journal's thread: {e}"))
            })?;
        let journal = Journal { inner };
        Ok(Some((
            journal.clone(),
            JournalThread {
                journal,
                thread: Some(thread),
            },
        )))
    }

    /// A new journal id.
    pub fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether callers must await [`Journal::durable`] before forwarding.
    pub fn waits_for_disk(&self) -> bool {
        self.inner.mode == JournalMode::Durable
    }

    /// Write `call`'s entry at the end of the current segment. Fails when the journal is
    /// stopping or the write fails (a full disk): the call must then not be forwarded.
    pub fn append(&self, call: &OpenCall) -> Result<Ticket, StoreError> {
        ENCODED.with_borrow_mut(|buf| {
            buf.clear();
            encode(call, buf);
            self.inner.append(call.journal_id, buf)
        })
    }

    /// Wait until the entry `ticket` names is on the disk (`"durable"`). Fails when the fsync
    /// that covered it failed, or the journal stopped first.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut rx = self.inner.synced.subscribe();
        let settled = rx
            .wait_for(|s| s.ok >= ticket.0 || s.failed >= ticket.0)
            .await
            .map(|s| *s)
            .map_err(|_| StoreError::Busy("the call journal stopped".into()))?;
        if settled.ok >= ticket.0 {
            Ok(())
        } else {
            Err(StoreError::Busy("the call journal's fsync failed".into()))
        }
    }

    /// Keep the exact rows of calls that ended but cannot be committed yet (the database is
    /// away): each replaces its call's entry, so a kill before the commit records the call as
    /// it ended. Rows without a journal id, and calls whose entry is already closed, are
    /// skipped. Called by the store's writer, never on the request path; fsynced by the journal
    /// thread like any append.
    pub fn spool(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for row in rows {
            let Some(id) = row.journal_id else { continue };
            if !self.inner.state.lock().open.contains_key(&id) {
                continue;
            }
            buf.clear();
            encode_finished(row, id, &mut buf);
            self.inner.append(id, &buf)?;
        }
        Ok(())
    }

    /// The rows of these entries are committed: forget them.
    pub fn closed(&self, ids: impl Iterator<Item = u64>) {
        let mut state = self.inner.state.lock();
        for id in ids {
            state.open.remove(&id);
        }
    }

    /// Entries appended since start, and the fsyncs that covered them.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.entries.load(Ordering::Relaxed),
            self.inner.commits.load(Ordering::Relaxed),
        )
    }

    /// Entries written and not yet closed by their row.
    pub fn open_entries(&self) -> usize {
        self.inner.state.lock().open.len()
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

/// The journal's thread. [`JournalThread::stop`] (or dropping it) settles what was written,
/// ends the thread, and removes the segments when no entry is open any more.
pub struct JournalThread {
    journal: Journal,
    thread: Option<JoinHandle<()>>,
}

impl JournalThread {
    /// Stop: call once every row the journal's entries wait for is committed (the store's
    /// writer has stopped). Entries still open stay on the disk for the next start.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let inner = &self.journal.inner;
        inner.state.lock().stopping = true;
        inner.work.notify_one();
        if thread.join().is_err() {
            tracing::error!("the call journal's thread panicked");
        }
        let state = inner.state.lock();
        if state.open.is_empty() {
            // Every entry has its row: nothing for the next start to look at.
            for segment in state.older.iter().chain(std::iter::once(&state.current)) {
                let _ = fs::remove_file(&segment.path);
            }
            for (_, segment) in &state.retired {
                let _ = fs::remove_file(&segment.path);
            }
        } else {
            tracing::warn!(
                open = state.open.len(),
                "call journal: calls without a row at stop; the next start records them as recovered"
            );
        }
    }
}

impl Drop for JournalThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for JournalThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalThread")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

thread_local! {
    /// Each serving thread encodes its entries here, outside the journal's lock.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Inner {
    fn append(&self, id: u64, record: &[u8]) -> Result<Ticket, StoreError> {
        let len = u32::try_from(record.len())
            .map_err(|_| StoreError::Backend("a call journal entry is too long".into()))?;
        let mut state = self.state.lock();
        if state.stopping {
            return Err(StoreError::Busy("the call journal is stopping".into()));
        }
        if state.broken || state.current.len >= SEGMENT_BYTES {
            self.rotate(&mut state)?;
        }
        let offset = state.current.len;
        state
            .current
            .file
            .write_all_at(record, offset)
            .map_err(|e| io_error(&state.current.path, "call journal write failed", &e))?;
        state.current.len += u64::from(len);
        state.written += 1;
        let seq = state.written;
        let segment = state.current.number;
        state.open.insert(
            id,
            Place {
                segment,
                offset,
                len,
            },
        );
        drop(state);
        self.entries.fetch_add(1, Ordering::Relaxed);
        if self.mode == JournalMode::Durable {
            self.work.notify_one();
        }
        Ok(Ticket(seq))
    }

    /// Start a new segment holding a copy of every open entry, and retire the older ones.
    fn rotate(&self, state: &mut State) -> Result<(), StoreError> {
        let mut next = Segment::create(&self.dir, state.current.number + 1)?;
        // The copy: the entries still open, from wherever they are now.
        let mut copy = Vec::new();
        let mut moved = Vec::with_capacity(state.open.len());
        for (&id, place) in &state.open {
            let from = std::iter::once(&state.current)
                .chain(&state.older)
                .find(|s| s.number == place.segment);
            let Some(from) = from else { continue };
            let start = copy.len();
            copy.resize(start + place.len as usize, 0);
            from.file
                .read_exact_at(&mut copy[start..], place.offset)
                .map_err(|e| io_error(&from.path, "call journal read failed", &e))?;
            moved.push((id, start as u64, place.len));
        }
        if !copy.is_empty() {
            if let Err(e) = next.file.write_all_at(&copy, 0) {
                let _ = fs::remove_file(&next.path);
                return Err(io_error(&next.path, "call journal write failed", &e));
            }
            next.len = copy.len() as u64;
        }
        for (id, offset, len) in moved {
            state.open.insert(
                id,
                Place {
                    segment: next.number,
                    offset,
                    len,
                },
            );
        }
        // The copy counts as an append: the old segments may go once it is on the disk.
        state.written += 1;
        let covered = state.written;
        let old = std::mem::replace(&mut state.current, next);
        let olds: Vec<Segment> = std::iter::once(old).chain(state.older.drain(..)).collect();
        if self.mode == JournalMode::Durable {
            state.retired.extend(olds.into_iter().map(|s| (covered, s)));
            self.work.notify_one();
        } else {
            // In the operating system's hands already: a killed process loses nothing.
            for s in olds {
                let _ = fs::remove_file(&s.path);
            }
        }
        state.broken = false;
        Ok(())
    }

    /// The journal thread: fsync what was written, wake who waits, unlink retired segments.
    fn run(&self) {
        let mut synced = 0_u64;
        loop {
            let (target, file, dir_synced) = {
                let mut state = self.state.lock();
                while state.written == synced && !state.stopping {
                    self.work.wait(&mut state);
                }
                if state.written == synced {
                    break; // stopping, and nothing left to settle
                }
                (
                    state.written,
                    Arc::clone(&state.current.file),
                    state.current.dir_synced,
                )
            };
            if self.mode != JournalMode::Durable {
                synced = target;
                continue;
            }
            let result = file.sync_data().and_then(|()| {
                if dir_synced {
                    Ok(())
                } else {
                    sync_dir(&self.dir)
                }
            });
            let mut state = self.state.lock();
            match result {
                Ok(()) => {
                    if Arc::ptr_eq(&file, &state.current.file) {
                        state.current.dir_synced = true;
                    }
                    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.retired)
                        .into_iter()
                        .partition(|(covered, _)| *covered <= target);
                    state.retired = kept;
                    drop(state);
                    for (_, segment) in gone {
                        let _ = fs::remove_file(&segment.path);
                    }
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.synced.send_modify(|s| s.ok = target);
                }
                Err(e) => {
                    state.broken = true;
                    drop(state);
                    tracing::error!(error = %e, dir = %self.dir.display(), "call journal fsync failed; calls waiting on it are refused");
                    self.synced.send_modify(|s| s.failed = target);
                }
            }
            synced = target;
        }
    }
}

impl Segment {
    fn create(dir: &Path, number: u64) -> Result<Segment, StoreError> {
        let path = dir.join(format!("{number:020}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot create a call journal segment", &e))?;
        Ok(Segment {
            number,
            path,
            file: Arc::new(file),
            len: 0,
            dir_synced: false,
        })
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &Path, what: &str, e: &io::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {}: {e}", path.display()))
}

// === the record ===

/// Append `call`'s record: `u32` payload length, `u32` CRC-32 of the payload, then the payload
/// (all little-endian): kind, id, ts, hold in, hold out, cost (with a presence byte), streamed,
/// and the texts, each a `u32` length (`u32::MAX` = none) and its bytes.
fn encode(call: &OpenCall, out: &mut Vec<u8>) {
    encode_kind(KIND_OPEN, call, out, |_| {});
}

/// A finished call's record: the open record's fields (its usage in place of the hold), then
/// cached and reasoning tokens, status, latency, time to first byte (with a presence byte), and
/// the outcome and usage source as texts.
fn encode_finished(row: &UsageRow, journal_id: u64, out: &mut Vec<u8>) {
    let call = OpenCall {
        journal_id,
        request_id: row.request_id.clone(),
        ts_ms: row.ts_ms,
        user_id: Arc::clone(&row.user_id),
        user_email: row.user_email.clone(),
        user_name: row.user_name.clone(),
        provider: Arc::clone(&row.provider),
        model: row.model.clone(),
        endpoint: row.endpoint,
        streamed: row.streamed,
        hold: row.usage,
        hold_cost_nano_usd: row.cost_nano_usd,
    };
    encode_kind(KIND_FINISHED, &call, out, |out| {
        out.extend_from_slice(&row.usage.cached_input_tokens.to_le_bytes());
        out.extend_from_slice(&row.usage.reasoning_tokens.to_le_bytes());
        out.extend_from_slice(&u64::from(row.status).to_le_bytes());
        out.extend_from_slice(&row.latency_ms.to_le_bytes());
        out.push(u8::from(row.ttfb_ms.is_some()));
        out.extend_from_slice(&row.ttfb_ms.unwrap_or(0).to_le_bytes());
        for text in [row.outcome.as_str(), row.usage_source.as_str()] {
            let n = u32::try_from(text.len()).unwrap_or(0);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&text.as_bytes()[..n as usize]);
        }
    });
}

fn encode_kind(kind: u8, call: &OpenCall, out: &mut Vec<u8>, trailer: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(kind);
    out.extend_from_slice(&call.journal_id.to_le_bytes());
    out.extend_from_slice(&call.ts_ms.to_le_bytes());
    out.extend_from_slice(&call.hold.input_tokens.to_le_bytes());
    out.extend_from_slice(&call.hold.output_tokens.to_le_bytes());
    out.push(u8::from(call.hold_cost_nano_usd.is_some()));
    out.extend_from_slice(&call.hold_cost_nano_usd.unwrap_or(0).to_le_bytes());
    out.push(u8::from(call.streamed));
    for text in [
        Some(call.request_id.as_str()),
        Some(&*call.user_id),
        call.user_email.as_deref(),
        call.user_name.as_deref(),
        Some(&*call.provider),
        call.model.as_deref(),
        Some(call.endpoint),
    ] {
        match text {
            Some(t) => {
                let n = u32::try_from(t.len()).unwrap_or(u32::MAX - 1);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&t.as_bytes()[..n as usize]);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    trailer(out);
    let payload = start + HEADER_BYTES;
    let payload_len = u32::try_from(out.len() - payload).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(&out[payload..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..payload].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back: the call, and its exact row when it finished.
type Decoded = (OpenCall, Option<UsageRow>);

/// The records of one segment, until the first that is cut short or damaged (`torn`).
fn decode_segment(bytes: &[u8]) -> (Vec<Decoded>, bool) {
    let mut calls = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(call) = decode_record(&mut rest) else {
            // A tail of zeros is no damage; anything else is.
            return (calls, rest.iter().any(|b| *b != 0));
        };
        calls.push(call);
    }
    (calls, false)
}

/// One record off the front of `rest`, or `None` (leaving `rest` as it was) when what is
/// there is not a whole, intact record.
fn decode_record(rest: &mut &[u8]) -> Option<Decoded> {
    let header = rest.get(..HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = rest.get(HEADER_BYTES..HEADER_BYTES + len as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let call = decode_payload(payload)?;
    *rest = &rest[HEADER_BYTES + len as usize..];
    Some(call)
}

fn decode_payload(mut p: &[u8]) -> Option<Decoded> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = p.split_at_checked(n)?;
        *p = tail;
        Some(head)
    }
    fn u64_(p: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(p, 8)?.try_into().ok()?))
    }
    fn text(p: &mut &[u8]) -> Option<Option<String>> {
        let n = u32::from_le_bytes(take(p, 4)?.try_into().ok()?);
        if n == u32::MAX {
            return Some(None);
        }
        Some(Some(
            String::from_utf8_lossy(take(p, n as usize)?).into_owned(),
        ))
    }
    let kind = take(&mut p, 1)?[0];
    if kind != KIND_OPEN && kind != KIND_FINISHED {
        return None;
    }
    let journal_id = u64_(&mut p)?;
    let ts_ms = i64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
    let input_tokens = u64_(&mut p)?.min(MAX_TOKENS_PER_CALL);
    let output_tokens = u64_(&mut p)?.min(MAX_TOKENS_PER_CALL);
    let has_cost = take(&mut p, 1)? != [0];
    let cost = i64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
    let streamed = take(&mut p, 1)? != [0];
    let request_id = text(&mut p)?.unwrap_or_default();
    let user_id = text(&mut p)?.unwrap_or_default();
    let user_email = text(&mut p)?;
    let user_name = text(&mut p)?;
    let provider = text(&mut p)?.unwrap_or_default();
    let model = text(&mut p)?;
    let endpoint = text(&mut p)?.unwrap_or_default();
    let call = OpenCall {
        journal_id,
        request_id,
        ts_ms,
        user_id: Arc::from(user_id),
        user_email,
        user_name,
        provider: Arc::from(provider),
        model,
        endpoint: Endpoint::parse(&endpoint).as_str(),
        streamed,
        hold: Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        },
        hold_cost_nano_usd: has_cost.then(|| cost.clamp(0, MAX_COST_NANO_USD_PER_CALL)),
    };
    if kind == KIND_OPEN {
        return Some((call, None));
    }
    let cached = u64_(&mut p)?.min(MAX_TOKENS_PER_CALL);
    let reasoning = u64_(&mut p)?.min(MAX_TOKENS_PER_CALL);
    let status = u16::try_from(u64_(&mut p)?).unwrap_or(0);
    let latency_ms = u64_(&mut p)?;
    let has_ttfb = take(&mut p, 1)? != [0];
    let ttfb = u64_(&mut p)?;
    let outcome = Outcome::parse(&text(&mut p)?.unwrap_or_default())?;
    let usage_source = UsageSource::parse(&text(&mut p)?.unwrap_or_default())?;
    let row = UsageRow {
        request_id: call.request_id.clone(),
        ts_ms: call.ts_ms,
        user_id: Arc::clone(&call.user_id),
        user_email: call.user_email.clone(),
        user_name: call.user_name.clone(),
        provider: Arc::clone(&call.provider),
        model: call.model.clone(),
        endpoint: call.endpoint,
        streamed: call.streamed,
        status,
        usage: Usage {
            input_tokens,
            cached_input_tokens: cached.min(input_tokens),
            output_tokens,
            reasoning_tokens: reasoning.min(output_tokens),
        },
        cost_nano_usd: call.hold_cost_nano_usd,
        usage_source,
        latency_ms,
        ttfb_ms: has_ttfb.then_some(ttfb),
        outcome,
        journal_id: Some(journal_id),
        plan: None,
    };
    Some((call, Some(row)))
}

/// Every entry the segments in `dir` hold (none when `dir` does not exist). Nothing is removed:
/// the backend records what it lacks first, then calls [`clear_dir`].
pub fn read_dir(dir: &Path) -> Result<Leftovers, StoreError> {
    let mut found = Leftovers::default();
    for path in segments(dir)? {
        let bytes = fs::read(&path)
            .map_err(|e| io_error(&path, "cannot read a call journal segment", &e))?;
        let (calls, torn) = decode_segment(&bytes);
        if torn {
            found.torn_segments += 1;
            tracing::warn!(segment = %path.display(), entries = calls.len(), "call journal: a segment ends in a damaged record; the entries before it are kept");
        }
        for (call, row) in calls {
            if let Some(row) = row {
                found.finished.insert(call.journal_id, row);
            }
            found.calls.push(call);
        }
    }
    found.calls.sort_by_key(|c| c.journal_id);
    found.calls.dedup_by_key(|c| c.journal_id);
    found.max_id = found.calls.last().map_or(0, |c| c.journal_id);
    Ok(found)
}

/// Remove every segment in `dir` (their entries are now rows) and make that durable.
pub fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    let paths = segments(dir)?;
    if paths.is_empty() {
        return Ok(());
    }
    for path in &paths {
        fs::remove_file(path)
            .map_err(|e| io_error(path, "cannot remove a call journal segment", &e))?;
    }
    sync_dir(dir).map_err(|e| io_error(dir, "cannot sync the call journal's directory", &e))
}

/// The segment files in `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io_error(
                dir,
                "cannot list the call journal's directory",
                &e,
            ));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SEGMENT_SUFFIX))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn call(id: u64, user: &str) -> OpenCall {
        OpenCall {
            journal_id: id,
            request_id: format!("req-{id}"),
            ts_ms: 1_780_000_000_000 + i64::try_from(id % 1000).unwrap(),
            user_id: Arc::from(user),
            user_email: None,
            user_name: Some("Ünïcode name".into()),
            provider: Arc::from("gemini"),
            model: None,
            endpoint: "streamGenerateContent",
            streamed: true,
            hold: Usage {
                input_tokens: 7,
                output_tokens: 8_192,
                ..Usage::default()
            },
            hold_cost_nano_usd: None,
        }
    }

    #[test]
    fn a_spooled_row_replaces_its_entry_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, thread) = Journal::start(dir.path(), JournalMode::Process, 0)
            .unwrap()
            .unwrap();
        let (a, b, c) = (
            call(journal.next_id(), "ann"),
            call(journal.next_id(), "bo"),
            call(journal.next_id(), "cy"),
        );
        for entry in [&a, &b, &c] {
            journal.append(entry).unwrap();
        }
        // `a` ended and waits for the database; `b` is still in flight; `c`'s row is in.
        let mut row = a.clone().recovered_row();
        row.status = 200;
        row.outcome = Outcome::Complete;
        row.usage_source = UsageSource::Reported;
        row.usage = Usage {
            input_tokens: 120,
            cached_input_tokens: 64,
            output_tokens: 30,
            reasoning_tokens: 12,
        };
        row.cost_nano_usd = Some(4_321);
        row.latency_ms = 812;
        row.ttfb_ms = Some(95);
        journal.closed(std::iter::once(c.journal_id));
        let mut late = c.clone().recovered_row();
        late.outcome = Outcome::Complete;
        journal.spool(&[row.clone(), late]).unwrap();
        // A kill now: what the next start reads.
        std::mem::forget(thread);
        let mut left = read_dir(dir.path()).unwrap();
        let calls = std::mem::take(&mut left.calls);
        assert_eq!(calls.len(), 3);
        assert_eq!(left.finished.len(), 1, "a closed entry is not spooled");
        let rows: Vec<UsageRow> = calls.into_iter().map(|c| left.row_for(c)).collect();
        assert_eq!(rows[0], row, "the exact row, not the estimate");
        assert_eq!(rows[1], b.recovered_row());
    }

    fn files(dir: &Path) -> usize {
        segments(dir).unwrap().len()
    }

    #[test]
    fn a_record_reads_back_as_written_and_impossible_figures_within_the_ceilings() {
        let mut buf = Vec::new();
        encode(&call(42, "ann"), &mut buf);
        let mut wild = call(43, "bo");
        wild.hold.input_tokens = u64::MAX;
        wild.hold_cost_nano_usd = Some(i64::MAX);
        wild.endpoint = "other";
        encode(&wild, &mut buf);
        let (calls, torn) = decode_segment(&buf);
        assert!(!torn);
        assert_eq!(calls[0], (call(42, "ann"), None));
        assert_eq!(calls[1].0.hold.input_tokens, MAX_TOKENS_PER_CALL);
        assert_eq!(
            calls[1].0.hold_cost_nano_usd,
            Some(MAX_COST_NANO_USD_PER_CALL)
        );
        // Every cut of the second record keeps the first and reports the damage; a flipped bit
        // anywhere in it is caught by the checksum.
        let one_len = {
            let mut b = Vec::new();
            encode(&call(42, "ann"), &mut b);
            b.len()
        };
        for cut in one_len + 1..buf.len() {
            let (calls, torn) = decode_segment(&buf[..cut]);
            assert_eq!((calls.len(), torn), (1, true), "cut at {cut}");
        }
        for bit in (one_len * 8..buf.len() * 8).step_by(5) {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let (calls, _) = decode_segment(&flipped);
            assert_eq!(calls.len(), 1, "bit {bit}");
        }
        // Zeros after the last record (a file system that extended the file) are no damage.
        let mut padded = buf.clone();
        padded.extend_from_slice(&[0; 64]);
        assert_eq!(decode_segment(&padded), (decode_segment(&buf).0, false));
    }

    #[test]
    fn a_full_segment_carries_its_open_entries_into_the_next_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("calls");
        let (journal, thread) = Journal::start(&dir, JournalMode::Process, 0)
            .unwrap()
            .unwrap();
        // One call stays open throughout (a stream that lasts an hour).
        let long = journal.next_id();
        journal.append(&call(long, "long")).unwrap();
        let mut last = 0;
        let mut written = 0_u64;
        while written < 3 * SEGMENT_BYTES {
            let id = journal.next_id();
            journal.append(&call(id, "short")).unwrap();
            journal.closed(std::iter::once(id));
            last = id;
            written += 130;
        }
        let tail = journal.next_id();
        journal.append(&call(tail, "tail")).unwrap();
        assert!(journal.inner.state.lock().current.number >= 3, "it rotated");
        assert_eq!(files(&dir), 1, "older segments are gone");
        assert_eq!(journal.open_entries(), 2);
        drop(thread); // stops with entries open: the segment stays
        let left = read_dir(&dir).unwrap();
        let ids: Vec<u64> = left.calls.iter().map(|c| c.journal_id).collect();
        assert!(ids.contains(&long) && ids.contains(&tail), "{}", ids.len());
        assert!(
            ids.len() < 40_000,
            "closed entries are not carried: {}",
            ids.len()
        );
        assert_eq!(left.max_id, tail);
        assert!(last < tail);
        clear_dir(&dir).unwrap();
        assert_eq!(files(&dir), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_entries_resolve_after_an_fsync_and_a_stop_leaves_no_segment() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("calls");
        let (journal, thread) = Journal::start(&dir, JournalMode::Durable, 0)
            .unwrap()
            .unwrap();
        assert!(journal.waits_for_disk());
        let mut waits = Vec::new();
        for _ in 0..200 {
            let journal = journal.clone();
            waits.push(tokio::spawn(async move {
                let id = journal.next_id();
                let ticket = journal.append(&call(id, "many")).unwrap();
                journal.durable(ticket).await.unwrap();
                journal.closed(std::iter::once(id));
            }));
        }
        for w in waits {
            w.await.unwrap();
        }
        let (entries, commits) = journal.counts();
        assert_eq!(entries, 200);
        assert!((1..=200).contains(&commits), "{commits}");
        assert_eq!(journal.open_entries(), 0);
        drop(thread);
        assert_eq!(files(&dir), 0, "a stop with nothing open leaves no segment");
        // A stopped journal refuses new entries instead of losing them.
        assert!(journal.append(&call(1, "late")).is_err());
    }
}
