//! `tollgate backup FILE`: a consistent copy of the SQLite database while the gateway serves.
//!
//! `VACUUM INTO` on a read-only connection of its own: it reads one snapshot of the database (a
//! WAL reader never blocks the writer, nor is blocked by it) and writes a compact, standalone
//! copy — no `-wal` beside it — to a new file, which is then opened and checked
//! (`PRAGMA integrity_check`). The copy holds every row committed before it began; calls in
//! flight then have their rows in the live file only (and their journal entries beside it).
//! Restoring is copying it over `store.path` while the gateway is stopped (README).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// Rows of `token_usage` in the copy.
    pub calls: u64,
    /// Users in the copy.
    pub users: u64,
    /// The copy's size in bytes.
    pub bytes: u64,
}

/// Copy the database at `db` to `to` (which must not exist) and check the copy. A copy that
/// fails its check is removed.
pub fn backup(db: &Path, to: &Path) -> Result<Backup, StoreError> {
    if !db.exists() {
        return Err(StoreError::Backend(format!(
            "there is no database at {}",
            db.display()
        )));
    }
    if to.exists() {
        return Err(StoreError::Backend(format!(
            "{} exists already: name a new file",
            to.display()
        )));
    }
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(Duration::from_secs(30))?;
    let target = to
        .to_str()
        .ok_or_else(|| StoreError::Backend(format!("{} is not a UTF-8 path", to.display())))?;
    source.execute("VACUUM INTO ?1", [target])?;
    drop(source);
    let checked = check(to);
    if checked.is_err() {
        let _ = std::fs::remove_file(to);
    }
    checked
}

fn check(path: &Path) -> Result<Backup, StoreError> {
    let copy = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(StoreError::Backend(format!(
            "the copy at {} failed its integrity check: {verdict}",
            path.display()
        )));
    }
    let count = |sql: &str| -> Result<u64, StoreError> {
        let n: i64 = copy.query_row(sql, [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(Backup {
        calls: count("SELECT count(*) FROM token_usage")?,
        users: count("SELECT count(*) FROM users")?,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}
