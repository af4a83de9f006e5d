//! The unit of work: one [`Work`] — a change and its audit row — in one `BEGIN IMMEDIATE`
//! transaction on the admin side's writing connection. Either both commit or neither does.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::audit::write_audit;
use super::{accounts, controls};
use crate::store::work::{audit_entry, with_audit_id};
use crate::store::{Committed, Op, StoreError, Work};

/// Run `work` in one transaction: the change, then the audit row
/// [`crate::store::work::audit_entry`] makes of it.
pub fn commit(conn: &mut Connection, work: &Work) -> Result<Committed, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done = change(&tx, work)?;
    let audit_id = match audit_entry(work, &done)? {
        Some(audit) => Some(write_audit(&tx, &audit)?),
        None => None,
    };
    tx.commit()?;
    Ok(with_audit_id(done, audit_id))
}

/// The change `work` makes, inside `tx`, and what it did.
fn change(tx: &Transaction<'_>, work: &Work) -> Result<Committed, StoreError> {
    let at = work.at_ms;
    Ok(match &work.op {
        Op::Block { user, reason } => Committed::Controls(Box::new(controls::set_user_blocked(
            tx,
            user,
            true,
            reason.as_deref(),
            at,
        )?)),
        Op::Unblock { user } => Committed::Controls(Box::new(controls::set_user_blocked(
            tx, user, false, None, at,
        )?)),
        Op::SetLimits { user, patch } => {
            let change =
                controls::set_user_overrides(tx, user, patch, at).map_err(|e| match e {
                    rusqlite::Error::ToSqlConversionFailure(_) => {
                        StoreError::Invalid("a limit is too large to store".into())
                    }
                    other => other.into(),
                })?;
            Committed::Controls(Box::new(change))
        }
        Op::AddAccount {
            name,
            password_hash,
        } => Committed::Account {
            changed: accounts::add_account(tx, name, password_hash, at)?,
        },
        Op::SetPassword {
            name,
            password_hash,
        } => Committed::Account {
            changed: accounts::set_password(tx, name, password_hash)?,
        },
        Op::RemoveAccount { name } => Committed::Account {
            changed: accounts::remove_account(tx, name)?,
        },
        Op::SignIn {
            token_sha256,
            expires_at_ms,
            from: _,
        } => {
            accounts::create_session(tx, token_sha256, &work.actor, at, *expires_at_ms)?;
            Committed::Audited { audit_id: 0 }
        }
        Op::SignInFailed { .. } | Op::ConfigReload { .. } => Committed::Audited { audit_id: 0 },
        Op::SignOut { token_sha256 } => Committed::SignedOut {
            admin: accounts::delete_session(tx, token_sha256)?,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::quota::{Change, OverridesPatch, UserControls};
    use crate::store::AuditAction;
    use crate::store::sqlite::schema::apply_schema;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("tollgate.db")).unwrap();
        apply_schema(&conn, &jiff::tz::TimeZone::UTC).unwrap();
        (dir, conn)
    }

    fn work(op: Op) -> Work {
        Work {
            actor: "root".into(),
            at_ms: 1_000,
            op,
        }
    }

    fn controls(committed: Committed) -> Change<UserControls> {
        match committed {
            Committed::Controls(change) => *change,
            other => panic!("{other:?}"),
        }
    }

    /// (actor, action, target, before_json, after_json, detail) of every audit row, oldest first.
    type Audit = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    fn audit(conn: &Connection) -> Vec<Audit> {
        let mut stmt = conn
            .prepare(
                "SELECT actor, action, target, before_json, after_json, detail FROM admin_audit \
                 ORDER BY id",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    #[test]
    fn block_unblock_and_limits_commit_with_their_audit_rows() {
        let (_dir, mut conn) = db();
        let change = controls(
            commit(
                &mut conn,
                &work(Op::Block {
                    user: "yul".into(),
                    reason: Some("chargeback".into()),
                }),
            )
            .unwrap(),
        );
        assert!(change.created);
        assert_eq!(change.before, UserControls::default());
        assert!(change.after.blocked);
        assert_eq!(change.after.blocked_reason.as_deref(), Some("chargeback"));

        let change = controls(
            commit(
                &mut conn,
                &work(Op::SetLimits {
                    user: "yul".into(),
                    patch: OverridesPatch {
                        daily_tokens: Some(Some(5)),
                        monthly_cost_nano_usd: Some(Some(7)),
                        ..OverridesPatch::default()
                    },
                }),
            )
            .unwrap(),
        );
        assert!(!change.created);
        assert!(change.after.blocked, "limits leave the block alone");
        assert_eq!(change.after.overrides.daily_tokens, Some(5));

        let change =
            controls(commit(&mut conn, &work(Op::Unblock { user: "yul".into() })).unwrap());
        assert!(change.before.blocked);
        assert!(!change.after.blocked);
        assert_eq!(change.after.blocked_reason, None);
        assert_eq!(
            super::controls::user_controls(&conn, "yul").unwrap(),
            Some(change.after.clone())
        );

        let rows = audit(&conn);
        let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(actions, ["block", "set_limits", "unblock"]);
        for row in &rows {
            assert_eq!(row.0, "root");
            assert_eq!(row.2.as_deref(), Some("yul"));
        }
        assert_eq!(rows[0].5.as_deref(), Some("chargeback"));
        assert!(rows[0].4.as_deref().unwrap().contains("\"blocked\":true"));
        assert!(rows[2].3.as_deref().unwrap().contains("\"daily_tokens\":5"));

        // A limit no store keeps is refused, and nothing is written.
        let err = commit(
            &mut conn,
            &work(Op::SetLimits {
                user: "yul".into(),
                patch: OverridesPatch {
                    monthly_tokens: Some(Some(u64::MAX)),
                    ..OverridesPatch::default()
                },
            }),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(audit(&conn).len(), 3);
    }

    #[test]
    fn a_failing_audit_row_rolls_the_change_back() {
        let (_dir, mut conn) = db();
        commit(
            &mut conn,
            &work(Op::Block {
                user: "zed".into(),
                reason: None,
            }),
        )
        .unwrap();
        conn.execute_batch(
            "CREATE TRIGGER no_audit BEFORE INSERT ON admin_audit \
             BEGIN SELECT RAISE(ABORT, 'the audit trail is full'); END;",
        )
        .unwrap();
        let err = commit(&mut conn, &work(Op::Unblock { user: "zed".into() })).unwrap_err();
        assert!(err.to_string().contains("the audit trail is full"), "{err}");
        assert!(
            super::controls::user_controls(&conn, "zed")
                .unwrap()
                .unwrap()
                .blocked,
            "rolled back"
        );
    }

    #[test]
    fn accounts_sessions_and_reloads_are_audited_as_they_say() {
        let (_dir, mut conn) = db();
        let add = |name: &str| Op::AddAccount {
            name: name.into(),
            password_hash: "$argon2id$x".into(),
        };
        assert_eq!(
            commit(&mut conn, &work(add("ops"))).unwrap(),
            Committed::Account { changed: true }
        );
        assert_eq!(
            commit(&mut conn, &work(add("ops"))).unwrap(),
            Committed::Account { changed: false },
            "a taken name"
        );
        let sign_in = Work {
            actor: "ops".into(),
            at_ms: 2_000,
            op: Op::SignIn {
                token_sha256: "aa".into(),
                expires_at_ms: 9_000,
                from: "127.0.0.1".into(),
            },
        };
        assert!(matches!(
            commit(&mut conn, &sign_in).unwrap(),
            Committed::Audited { audit_id } if audit_id > 0
        ));
        assert!(
            super::accounts::session(&conn, "aa", 3_000)
                .unwrap()
                .is_some()
        );
        let failed = Work {
            actor: "ghost".into(),
            at_ms: 2_500,
            op: Op::SignInFailed {
                from: "10.0.0.9".into(),
            },
        };
        commit(&mut conn, &failed).unwrap();
        let out = |token: &str| Work {
            actor: String::new(),
            at_ms: 3_000,
            op: Op::SignOut {
                token_sha256: token.into(),
            },
        };
        assert_eq!(
            commit(&mut conn, &out("aa")).unwrap(),
            Committed::SignedOut {
                admin: Some("ops".into())
            }
        );
        assert_eq!(
            commit(&mut conn, &out("aa")).unwrap(),
            Committed::SignedOut { admin: None }
        );
        let reload = Op::ConfigReload {
            applied: false,
            file: "gateway.toml".into(),
            before_json: None,
            after_json: None,
            detail: "SIGHUP: bad".into(),
        };
        assert_eq!(reload.action(), AuditAction::ConfigReloadRefused);
        commit(&mut conn, &work(reload)).unwrap();
        assert!(matches!(
            commit(
                &mut conn,
                &work(Op::RemoveAccount {
                    name: "nobody".into()
                })
            )
            .unwrap(),
            Committed::Account { changed: false }
        ));

        let rows = audit(&conn);
        let summary: Vec<(&str, &str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref(), r.5.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("root", "admin_add", Some("ops"), None),
                ("ops", "login", None, Some("from 127.0.0.1")),
                ("ghost", "login_failed", None, Some("from 10.0.0.9")),
                ("ops", "logout", None, None),
                (
                    "root",
                    "config_reload_refused",
                    Some("gateway.toml"),
                    Some("SIGHUP: bad")
                ),
            ]
        );
    }
}
