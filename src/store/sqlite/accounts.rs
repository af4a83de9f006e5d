//! Admin accounts and their sign-in sessions (`admin_accounts`, `admin_sessions`).
//!
//! Accounts are created from the command line (`tollgate admin add`) with an argon2id hash made
//! by the caller; this module only stores and reads them. Sessions are kept by the SHA-256 of
//! their token, never the token itself, so the database file does not hand out sessions.
//! Everything here is blocking SQLite I/O, called off the async runtime by `SqliteStore`.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{AdminAccount, Session};

/// Create an account; `Ok(false)` when the name is taken.
pub fn add_account(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO admin_accounts (name, password_hash, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, password_hash, now_ms])?;
    Ok(n == 1)
}

/// Replace an existing account's password hash and end its sessions; `Ok(false)` when there is
/// no such account.
pub fn set_password(conn: &Connection, name: &str, password_hash: &str) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("UPDATE admin_accounts SET password_hash = ?2 WHERE name = ?1")?
        .execute(params![name, password_hash])?;
    conn.prepare_cached("DELETE FROM admin_sessions WHERE admin = ?1")?
        .execute([name])?;
    Ok(n == 1)
}

/// Remove an account and end its sessions; `Ok(false)` when there is no such account.
pub fn remove_account(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM admin_accounts WHERE name = ?1")?
        .execute([name])?;
    conn.prepare_cached("DELETE FROM admin_sessions WHERE admin = ?1")?
        .execute([name])?;
    Ok(n == 1)
}

/// Every account, by name.
pub fn list_accounts(conn: &Connection) -> rusqlite::Result<Vec<AdminAccount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, created_at, last_login_at FROM admin_accounts ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AdminAccount {
            name: r.get(0)?,
            created_at: r.get(1)?,
            last_login_at: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// How many accounts exist.
pub fn count_accounts(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM admin_accounts", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
}

/// The account's password hash, `None` when there is no such account.
pub fn password_hash(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT password_hash FROM admin_accounts WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// Record a session for `admin` (by its token's SHA-256, hex), note the sign-in time and drop
/// expired sessions. Run it in the transaction that writes the `login` audit row.
pub fn create_session(
    conn: &Connection,
    token_sha256: &str,
    admin: &str,
    now_ms: i64,
    expires_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM admin_sessions WHERE expires_at <= ?1")?
        .execute([now_ms])?;
    conn.prepare_cached(
        "INSERT INTO admin_sessions (token_sha256, admin, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![token_sha256, admin, now_ms, expires_ms])?;
    conn.prepare_cached("UPDATE admin_accounts SET last_login_at = ?2 WHERE name = ?1")?
        .execute(params![admin, now_ms])?;
    Ok(())
}

/// The admin a session token (by SHA-256, hex) belongs to, if the session exists, has not
/// expired at `now_ms` and its account still exists.
pub fn session(
    conn: &Connection,
    token_sha256: &str,
    now_ms: i64,
) -> rusqlite::Result<Option<Session>> {
    conn.prepare_cached(
        "SELECT s.admin, s.expires_at FROM admin_sessions s \
         JOIN admin_accounts a ON a.name = s.admin \
         WHERE s.token_sha256 = ?1 AND s.expires_at > ?2",
    )?
    .query_row(params![token_sha256, now_ms], |r| {
        Ok(Session {
            admin: r.get(0)?,
            expires_at: r.get(1)?,
        })
    })
    .optional()
}

/// End one session; returns the admin it belonged to, `None` when it did not exist.
pub fn delete_session(conn: &Connection, token_sha256: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("DELETE FROM admin_sessions WHERE token_sha256 = ?1 RETURNING admin")?
        .query_row([token_sha256], |r| r.get(0))
        .optional()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
        conn
    }

    #[test]
    fn accounts_are_unique_listed_and_removed_with_their_sessions() {
        let conn = db();
        assert!(add_account(&conn, "root", "$argon2id$x", 1).unwrap());
        assert!(!add_account(&conn, "root", "$argon2id$y", 2).unwrap());
        assert_eq!(
            password_hash(&conn, "root").unwrap().as_deref(),
            Some("$argon2id$x")
        );
        create_session(&conn, "aa", "root", 10, 100).unwrap();
        assert_eq!(
            session(&conn, "aa", 50).unwrap(),
            Some(Session {
                admin: "root".into(),
                expires_at: 100
            })
        );
        let listed = list_accounts(&conn).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_login_at, Some(10));
        assert!(remove_account(&conn, "root").unwrap());
        assert_eq!(session(&conn, "aa", 50).unwrap(), None);
        assert!(!remove_account(&conn, "root").unwrap());
        assert_eq!(count_accounts(&conn).unwrap(), 0);
    }

    #[test]
    fn sessions_expire_and_end() {
        let conn = db();
        add_account(&conn, "ops", "h", 1).unwrap();
        create_session(&conn, "s1", "ops", 10, 100).unwrap();
        assert!(session(&conn, "s1", 99).unwrap().is_some());
        assert_eq!(session(&conn, "s1", 100).unwrap(), None);
        // The next sign-in sweeps expired rows.
        create_session(&conn, "s2", "ops", 200, 300).unwrap();
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM admin_sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
        assert_eq!(delete_session(&conn, "s2").unwrap().as_deref(), Some("ops"));
        assert_eq!(delete_session(&conn, "s2").unwrap(), None);
    }

    #[test]
    fn a_new_password_ends_sessions() {
        let conn = db();
        add_account(&conn, "ops", "h", 1).unwrap();
        create_session(&conn, "s1", "ops", 10, 100).unwrap();
        assert!(set_password(&conn, "ops", "h2").unwrap());
        assert_eq!(session(&conn, "s1", 50).unwrap(), None);
        assert!(!set_password(&conn, "nobody", "h").unwrap());
    }
}
