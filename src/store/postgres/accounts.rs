//! Admin accounts and their sign-in sessions in PostgreSQL (`admin_accounts`,
//! `admin_sessions`): the writes a unit of work makes (inside its transaction, see `work.rs`)
//! and the reads sign-in and every admin request make.
//!
//! Sessions are kept by the SHA-256 of their token, never the token. Several gateways share the
//! tables, so the writes that touch an account take its row lock first (an `UPDATE` or
//! `DELETE` of it) before touching its sessions: a sign-in and a password change or removal of
//! the same account then run one after the other, and a password change cannot miss a session
//! a concurrent sign-in was adding.

use tokio_postgres::GenericClient;

use crate::store::{AdminAccount, Session, StoreError};

/// Create an account; `Ok(false)` when the name is taken (also by a concurrent add).
pub async fn add_account(
    c: &(impl GenericClient + Sync),
    name: &str,
    password_hash: &str,
    now_ms: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = c
        .execute(
            "INSERT INTO admin_accounts (name, password_hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
            &[&name, &password_hash, &now_ms],
        )
        .await?;
    Ok(n == 1)
}

/// Replace an existing account's password hash and end its sessions; `Ok(false)` when there is
/// no such account.
pub async fn set_password(
    c: &(impl GenericClient + Sync),
    name: &str,
    password_hash: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = c
        .execute(
            "UPDATE admin_accounts SET password_hash = $2 WHERE name = $1",
            &[&name, &password_hash],
        )
        .await?;
    c.execute("DELETE FROM admin_sessions WHERE admin = $1", &[&name])
        .await?;
    Ok(n == 1)
}

/// Remove an account and end its sessions; `Ok(false)` when there is no such account.
pub async fn remove_account(
    c: &(impl GenericClient + Sync),
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = c
        .execute("DELETE FROM admin_accounts WHERE name = $1", &[&name])
        .await?;
    c.execute("DELETE FROM admin_sessions WHERE admin = $1", &[&name])
        .await?;
    Ok(n == 1)
}

/// Note `admin`'s sign-in time, drop expired sessions and record a session (by its token's
/// SHA-256, hex). Run it in the transaction that writes the `login` audit row.
pub async fn create_session(
    c: &(impl GenericClient + Sync),
    token_sha256: &str,
    admin: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    // First, so that the account's row lock orders this against a password change.
    c.execute(
        "UPDATE admin_accounts SET last_login_at = $2 WHERE name = $1",
        &[&admin, &now_ms],
    )
    .await?;
    c.execute(
        "DELETE FROM admin_sessions WHERE expires_at <= $1",
        &[&now_ms],
    )
    .await?;
    c.execute(
        "INSERT INTO admin_sessions (token_sha256, admin, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
        &[&token_sha256, &admin, &now_ms, &expires_ms],
    )
    .await?;
    Ok(())
}

/// End one session; returns the admin it belonged to, `None` when it did not exist (or a
/// concurrent sign-out ended it first).
pub async fn delete_session(
    c: &(impl GenericClient + Sync),
    token_sha256: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "DELETE FROM admin_sessions WHERE token_sha256 = $1 RETURNING admin",
            &[&token_sha256],
        )
        .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// The account's argon2id PHC string, `None` for an unknown name. A pooled client is
/// `&**client`.
pub async fn password_hash(
    c: &(impl GenericClient + Sync),
    name: &str,
) -> Result<Option<String>, StoreError> {
    let row = c
        .query_opt(
            "SELECT password_hash FROM admin_accounts WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The session whose token hashes to `token_sha256`, if it exists, has not expired at
/// `now_ms` and its account still exists.
pub async fn session(
    c: &(impl GenericClient + Sync),
    token_sha256: &str,
    now_ms: i64,
) -> Result<Option<Session>, StoreError> {
    let row = c
        .query_opt(
            "SELECT s.admin, s.expires_at FROM admin_sessions s \
             JOIN admin_accounts a ON a.name = s.admin \
             WHERE s.token_sha256 = $1 AND s.expires_at > $2",
            &[&token_sha256, &now_ms],
        )
        .await?;
    let session = row
        .map(|r| {
            Ok::<_, tokio_postgres::Error>(Session {
                admin: r.try_get(0)?,
                expires_at: r.try_get(1)?,
            })
        })
        .transpose()?;
    Ok(session)
}

/// Every account, by name.
pub async fn list_accounts(
    c: &(impl GenericClient + Sync),
) -> Result<Vec<AdminAccount>, StoreError> {
    let rows = c
        .query(
            "SELECT name, created_at, last_login_at FROM admin_accounts ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AdminAccount {
                name: r.try_get(0)?,
                created_at: r.try_get(1)?,
                last_login_at: r.try_get(2)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;

    async fn db() -> (TestDb, tokio_postgres::Client) {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        (db, c)
    }

    async fn sessions(c: &tokio_postgres::Client) -> Vec<String> {
        c.query(
            "SELECT token_sha256 FROM admin_sessions ORDER BY token_sha256",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    #[tokio::test]
    async fn accounts_are_unique_listed_and_removed_with_their_sessions() {
        let (_db, c) = db().await;
        assert!(add_account(&c, "root", "$argon2id$x", 1).await.unwrap());
        assert!(!add_account(&c, "root", "$argon2id$y", 2).await.unwrap());
        assert!(add_account(&c, "ops", "$argon2id$o", 3).await.unwrap());
        assert_eq!(
            password_hash(&c, "root").await.unwrap().as_deref(),
            Some("$argon2id$x"),
            "a taken name keeps its first hash"
        );
        assert_eq!(password_hash(&c, "nobody").await.unwrap(), None);
        create_session(&c, "aa", "root", 10, 100).await.unwrap();
        assert_eq!(
            session(&c, "aa", 50).await.unwrap(),
            Some(Session {
                admin: "root".into(),
                expires_at: 100
            })
        );
        assert_eq!(
            list_accounts(&c).await.unwrap(),
            [
                AdminAccount {
                    name: "ops".into(),
                    created_at: 3,
                    last_login_at: None
                },
                AdminAccount {
                    name: "root".into(),
                    created_at: 1,
                    last_login_at: Some(10)
                },
            ]
        );
        assert!(remove_account(&c, "root").await.unwrap());
        assert_eq!(session(&c, "aa", 50).await.unwrap(), None);
        assert!(sessions(&c).await.is_empty(), "removed with the account");
        assert!(!remove_account(&c, "root").await.unwrap());
        assert_eq!(list_accounts(&c).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sessions_expire_and_end() {
        let (_db, c) = db().await;
        add_account(&c, "ops", "h", 1).await.unwrap();
        create_session(&c, "s1", "ops", 10, 100).await.unwrap();
        assert!(session(&c, "s1", 99).await.unwrap().is_some());
        assert_eq!(session(&c, "s1", 100).await.unwrap(), None, "expired");
        assert_eq!(session(&c, "nope", 50).await.unwrap(), None);
        // The next sign-in sweeps expired rows.
        create_session(&c, "s2", "ops", 200, 300).await.unwrap();
        assert_eq!(sessions(&c).await, ["s2"]);
        assert_eq!(
            delete_session(&c, "s2").await.unwrap().as_deref(),
            Some("ops")
        );
        assert_eq!(delete_session(&c, "s2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_new_password_ends_sessions() {
        let (_db, c) = db().await;
        add_account(&c, "ops", "h", 1).await.unwrap();
        add_account(&c, "dev", "d", 1).await.unwrap();
        create_session(&c, "s1", "ops", 10, 100).await.unwrap();
        create_session(&c, "s2", "dev", 10, 100).await.unwrap();
        assert!(set_password(&c, "ops", "h2").await.unwrap());
        assert_eq!(
            password_hash(&c, "ops").await.unwrap().as_deref(),
            Some("h2")
        );
        assert_eq!(session(&c, "s1", 50).await.unwrap(), None);
        assert!(
            session(&c, "s2", 50).await.unwrap().is_some(),
            "another account's session stays"
        );
        assert!(!set_password(&c, "nobody", "h").await.unwrap());
    }
}
