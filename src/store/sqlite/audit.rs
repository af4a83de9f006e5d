//! The `admin_audit` trail: one row per admin action (sign-in, failed sign-in, block, unblock,
//! limit change, config reload), written on the caller's connection so that the row commits or
//! rolls back with the action it records. Rows are only ever inserted and read here: nothing in
//! Tollgate updates or deletes them.

use rusqlite::{Connection, params};

use crate::store::AuditRow;
pub use crate::store::work::AuditEntry;

/// Insert `entry`. Call it inside the transaction that carries the action (a `Transaction`
/// derefs to `Connection`).
pub fn write_audit(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO admin_audit (ts, actor, action, target, before_json, after_json, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.ts,
        entry.actor,
        entry.action.as_str(),
        entry.target,
        entry.before_json,
        entry.after_json,
        entry.detail,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Audit rows newest first, optionally only those about `target` and only those older than
/// the cursor `before_id`; at most `limit`.
pub fn audit_page(
    conn: &Connection,
    target: Option<&str>,
    before_id: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<AuditRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, actor, action, target, before_json, after_json, detail FROM admin_audit \
         WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR id < ?2) \
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![target, before_id, limit], |r| {
        Ok(AuditRow {
            id: r.get(0)?,
            ts: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            before_json: r.get(5)?,
            after_json: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::store::AuditAction;

    #[test]
    fn written_rows_read_back_newest_first_and_filter_by_target() {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
        for (i, target) in ["u1", "u2", "u1"].iter().enumerate() {
            write_audit(
                &conn,
                &AuditEntry {
                    ts: i64::try_from(i).unwrap(),
                    actor: "root".into(),
                    action: AuditAction::Block,
                    target: Some((*target).to_string()),
                    detail: Some(format!("n{i}")),
                    before_json: None,
                    after_json: None,
                },
            )
            .unwrap();
        }
        let all = audit_page(&conn, None, None, 10).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| r.detail.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["n2", "n1", "n0"]
        );
        let u1 = audit_page(&conn, Some("u1"), None, 10).unwrap();
        assert_eq!(u1.len(), 2);
        let older = audit_page(&conn, None, Some(all[0].id), 1).unwrap();
        assert_eq!(older[0].detail.as_deref(), Some("n1"));
    }
}
