//! The `admin_audit` trail in PostgreSQL: inserting one row inside the transaction of the
//! action it records (so that both commit or neither does), and reading pages of it, newest
//! first. Nothing in Tollgate updates or deletes audit rows. What a row says is decided by
//! [`crate::store::work`], shared with the SQLite store.

use tokio_postgres::GenericClient;

use crate::store::work::AuditEntry;
use crate::store::{AuditRow, StoreError};

/// Insert `entry` (call it inside the transaction that carries the action); returns its id.
pub async fn write_audit(
    c: &(impl GenericClient + Sync),
    entry: &AuditEntry,
) -> Result<i64, tokio_postgres::Error> {
    let row = c
        .query_one(
            "INSERT INTO admin_audit (ts, actor, action, target, before_json, after_json, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &entry.ts,
                &entry.actor,
                &entry.action.as_str(),
                &entry.target,
                &entry.before_json,
                &entry.after_json,
                &entry.detail,
            ],
        )
        .await?;
    row.try_get(0)
}

/// Audit rows newest first (by id), optionally only those about `target` and only those older
/// than the cursor `before_id`; at most `limit`. A pooled client is `&**client`.
pub async fn audit_page(
    c: &(impl GenericClient + Sync),
    target: Option<&str>,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRow>, StoreError> {
    let rows = c
        .query(
            "SELECT id, ts, actor, action, target, before_json, after_json, detail \
             FROM admin_audit \
             WHERE ($1::text IS NULL OR target = $1) AND ($2::int8 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
            &[&target, &before_id, &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditRow {
                id: r.try_get(0)?,
                ts: r.try_get(1)?,
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                target: r.try_get(4)?,
                before_json: r.try_get(5)?,
                after_json: r.try_get(6)?,
                detail: r.try_get(7)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::store::AuditAction;
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;

    fn entry(i: i64, target: &str) -> AuditEntry {
        AuditEntry {
            ts: i,
            actor: "root".into(),
            action: AuditAction::Block,
            target: Some(target.into()),
            before_json: Some(format!("{{\"n\":{i}}}")),
            after_json: None,
            detail: Some(format!("n{i}")),
        }
    }

    fn details(rows: &[AuditRow]) -> Vec<&str> {
        rows.iter().map(|r| r.detail.as_deref().unwrap()).collect()
    }

    #[tokio::test]
    async fn written_rows_read_back_newest_first_page_by_page_and_filter_by_target() {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        let mut ids = Vec::new();
        for (i, target) in ["u1", "u2", "u1", "u1", "u2"].iter().enumerate() {
            ids.push(
                write_audit(&c, &entry(i64::try_from(i).unwrap(), target))
                    .await
                    .unwrap(),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

        let all = audit_page(&c, None, None, 10).await.unwrap();
        assert_eq!(details(&all), ["n4", "n3", "n2", "n1", "n0"]);
        assert_eq!(
            all[4],
            AuditRow {
                id: ids[0],
                ts: 0,
                actor: "root".into(),
                action: "block".into(),
                target: Some("u1".into()),
                before_json: Some("{\"n\":0}".into()),
                after_json: None,
                detail: Some("n0".into()),
            }
        );

        // Paging with the last id of each page as the cursor walks every row once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = audit_page(&c, None, cursor, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            cursor = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.detail.unwrap()));
        }
        assert_eq!(seen, ["n4", "n3", "n2", "n1", "n0"]);

        let u1 = audit_page(&c, Some("u1"), None, 10).await.unwrap();
        assert_eq!(details(&u1), ["n3", "n2", "n0"]);
        let u1_older = audit_page(&c, Some("u1"), Some(ids[3]), 1).await.unwrap();
        assert_eq!(details(&u1_older), ["n2"]);
        assert!(
            audit_page(&c, Some("nobody"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(audit_page(&c, None, None, 0).await.unwrap().is_empty());
    }
}
