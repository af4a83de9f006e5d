//! The PostgreSQL schema: numbered migrations (`migrations/NNNN_name.sql`), each applied once,
//! in order, in one transaction with its record in `tollgate_migrations`, under a transaction
//! advisory lock — so that two replicas starting together migrate once, and the second finds
//! the work done. A database migrated by a newer Tollgate (a version this one does not know) is
//! refused rather than written to.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Every migration this Tollgate knows, oldest first: version, name, SQL.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (
        2,
        "users_id_bytes",
        include_str!("migrations/0002_users_id_bytes.sql"),
    ),
    (3, "leases", include_str!("migrations/0003_leases.sql")),
    (4, "alerts", include_str!("migrations/0004_alerts.sql")),
    (
        5,
        "users_plan",
        include_str!("migrations/0005_users_plan.sql"),
    ),
];

/// The newest schema version this Tollgate writes.
pub const SCHEMA_VERSION: i64 = 5;

/// `pg_advisory_xact_lock` key of the migrations ("tollgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The version the database had before (0: empty).
    pub from: i64,
    /// The version it has now.
    pub to: i64,
}

/// Bring the database to [`SCHEMA_VERSION`].
pub async fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tollgate_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT   NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .await?;
    let from: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM tollgate_migrations",
            &[],
        )
        .await?
        .get(0);
    if from > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {from}, newer than this Tollgate's \
             {SCHEMA_VERSION}; run a newer Tollgate"
        )));
    }
    let now = jiff::Timestamp::now().as_millisecond();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > from) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "migration {version} ({name}) failed: {}",
                super::describe(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO tollgate_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::store::postgres::testing::TestDb;

    #[tokio::test]
    async fn two_replicas_starting_together_migrate_once() {
        let db = TestDb::create().await;
        let settings = db.settings();
        let mut a = settings.connect().await.unwrap();
        let mut b = settings.connect().await.unwrap();
        let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
        let mut froms = [ra.unwrap().from, rb.unwrap().from];
        froms.sort_unstable();
        assert_eq!(
            froms,
            [0, SCHEMA_VERSION],
            "one migrated, the other found it done"
        );
        let n: i64 = a
            .query_one("SELECT count(*) FROM tollgate_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, i64::try_from(MIGRATIONS.len()).unwrap());
        // Again: nothing to do.
        assert_eq!(
            migrate(&mut a).await.unwrap(),
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            }
        );
    }

    #[tokio::test]
    async fn a_database_an_older_tollgate_made_is_brought_up_to_date() {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        // What version 1 left: its tables and its record.
        c.batch_execute(&format!(
            "CREATE TABLE tollgate_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at BIGINT NOT NULL); {} \
             INSERT INTO tollgate_migrations VALUES (1, 'initial', 0);",
            MIGRATIONS[0].2
        ))
        .await
        .unwrap();
        let done = migrate(&mut c).await.unwrap();
        assert_eq!((done.from, done.to), (1, SCHEMA_VERSION));
        let index: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_id_bytes'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(index, 1);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_tollgate_is_refused() {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        c.execute(
            "INSERT INTO tollgate_migrations VALUES (99, 'future', 0)",
            &[],
        )
        .await
        .unwrap();
        let e = migrate(&mut c).await.unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_named_without_its_password() {
        let settings = crate::store::postgres::Settings::new(
            "postgres://tollgate:hunter2-secret@127.0.0.1:1/nowhere",
            2,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let e = settings.connect().await.unwrap_err().to_string();
        assert!(e.contains("postgres://tollgate@127.0.0.1:1/nowhere"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
