//! The unit of work in PostgreSQL: one [`Work`] — a change and its audit row — in one
//! transaction, both committed or neither, with the SQLite store's semantics (what each
//! [`Op`] writes, what it answers; the audit row itself is [`crate::store::work`]'s).
//!
//! Several gateways may commit at once against the same database. Each statement is one that
//! stays right under concurrent transactions at READ COMMITTED: users and accounts are created
//! with `INSERT … ON CONFLICT DO NOTHING`, a user's controls are read `FOR UPDATE` before they
//! are changed (`controls.rs`), and a session is ended by a `DELETE … RETURNING`, so that of two
//! sign-outs of one session only one is audited.

use tokio_postgres::Transaction;

use super::audit::write_audit;
use super::rows::GenericClientMut;
use super::{accounts, controls};
use crate::store::work::{audit_entry, with_audit_id};
use crate::store::{Committed, Op, StoreError, Work};

/// Run `work` in one transaction of its own. A pooled client (`deadpool_postgres::Client`) and
/// a plain one both do.
pub async fn commit(c: &mut impl GenericClientMut, work: &Work) -> Result<Committed, StoreError> {
    let tx = c.begin().await?;
    let committed = commit_in(&tx, work).await?;
    tx.commit().await?;
    Ok(committed)
}

/// The change of `work` and its audit row, inside `tx`, which the caller commits (or drops,
/// rolling both back, when this fails).
pub async fn commit_in(tx: &Transaction<'_>, work: &Work) -> Result<Committed, StoreError> {
    let at = work.at_ms;
    let done = match &work.op {
        Op::Block { user, reason } => Committed::Controls(Box::new(
            controls::set_user_blocked(tx, user, true, reason.as_deref(), at).await?,
        )),
        Op::Unblock { user } => Committed::Controls(Box::new(
            controls::set_user_blocked(tx, user, false, None, at).await?,
        )),
        Op::SetLimits { user, patch } => Committed::Controls(Box::new(
            controls::set_user_overrides(tx, user, patch, at).await?,
        )),
        Op::AddAccount {
            name,
            password_hash,
        } => Committed::Account {
            changed: accounts::add_account(tx, name, password_hash, at).await?,
        },
        Op::SetPassword {
            name,
            password_hash,
        } => Committed::Account {
            changed: accounts::set_password(tx, name, password_hash).await?,
        },
        Op::RemoveAccount { name } => Committed::Account {
            changed: accounts::remove_account(tx, name).await?,
        },
        Op::SignIn {
            token_sha256,
            expires_at_ms,
            from: _,
        } => {
            accounts::create_session(tx, token_sha256, &work.actor, at, *expires_at_ms).await?;
            Committed::Audited { audit_id: 0 }
        }
        Op::SignInFailed { .. } | Op::ConfigReload { .. } => Committed::Audited { audit_id: 0 },
        Op::SignOut { token_sha256 } => Committed::SignedOut {
            admin: accounts::delete_session(tx, token_sha256).await?,
        },
    };
    let audit_id = match audit_entry(work, &done)? {
        Some(audit) => Some(write_audit(tx, &audit).await?),
        None => None,
    };
    if let Op::Block { user, .. } | Op::Unblock { user } | Op::SetLimits { user, .. } = &work.op {
        // Delivered at commit to every gateway listening (`lease::listen`), which re-reads the
        // user's controls: the change applies to their next call on every gateway. A notice
        // holds under 8000 bytes; for a longer id an empty one says "re-read everyone".
        let payload = if user.len() < 4_000 {
            user.as_str()
        } else {
            ""
        };
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&super::lease::CONTROLS_CHANNEL, &payload],
        )
        .await?;
    }
    Ok(with_audit_id(done, audit_id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    //! Every [`Op`]'s effect and its audit row, rollback, and gateways committing at once —
    //! each test on a database of its own.

    use std::time::Duration;

    use super::*;
    use crate::quota::{Change, OverridesPatch, UserControls};
    use crate::store::postgres::controls::user_controls;
    use crate::store::postgres::schema::migrate;
    use crate::store::postgres::testing::TestDb;
    use crate::store::postgres::{Settings, accounts::session};
    use crate::store::{AuditAction, AuditRow};

    async fn db() -> (TestDb, tokio_postgres::Client) {
        let db = TestDb::create().await;
        let mut c = db.settings().connect().await.unwrap();
        migrate(&mut c).await.unwrap();
        (db, c)
    }

    fn work(op: Op) -> Work {
        Work {
            actor: "root".into(),
            at_ms: 1_000,
            op,
        }
    }

    fn block(user: &str, reason: Option<&str>) -> Work {
        work(Op::Block {
            user: user.into(),
            reason: reason.map(str::to_owned),
        })
    }

    fn controls(committed: Committed) -> Change<UserControls> {
        match committed {
            Committed::Controls(change) => *change,
            other => panic!("{other:?}"),
        }
    }

    /// Every audit row, oldest first.
    async fn audit(c: &tokio_postgres::Client) -> Vec<AuditRow> {
        let mut rows = super::super::audit::audit_page(c, None, None, 1_000)
            .await
            .unwrap();
        rows.reverse();
        rows
    }

    async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn block_unblock_and_limits_commit_with_their_audit_rows() {
        let (_db, mut c) = db().await;
        let change = controls(
            commit(&mut c, &block("yul", Some("chargeback")))
                .await
                .unwrap(),
        );
        assert!(change.created);
        assert_eq!(change.before, UserControls::default());
        assert!(change.after.blocked);
        assert_eq!(change.after.blocked_reason.as_deref(), Some("chargeback"));
        assert_eq!(
            count(&c, "SELECT created_at FROM users WHERE id = 'yul'").await,
            1_000
        );

        let change = controls(
            commit(
                &mut c,
                &work(Op::SetLimits {
                    user: "yul".into(),
                    patch: OverridesPatch {
                        daily_tokens: Some(Some(5)),
                        monthly_cost_nano_usd: Some(Some(7)),
                        ..OverridesPatch::default()
                    },
                }),
            )
            .await
            .unwrap(),
        );
        assert!(!change.created);
        assert!(change.after.blocked, "limits leave the block alone");
        assert_eq!(change.after.overrides.daily_tokens, Some(5));
        assert_eq!(change.after.overrides.monthly_cost_nano_usd, Some(7));

        let change = controls(
            commit(&mut c, &work(Op::Unblock { user: "yul".into() }))
                .await
                .unwrap(),
        );
        assert!(change.before.blocked);
        assert!(!change.after.blocked);
        assert_eq!(change.after.blocked_reason, None);
        assert_eq!(change.after.overrides.daily_tokens, Some(5));
        assert_eq!(
            user_controls(&c, "yul").await.unwrap(),
            Some(change.after.clone())
        );

        let rows = audit(&c).await;
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["block", "set_limits", "unblock"]);
        for row in &rows {
            assert_eq!(row.actor, "root");
            assert_eq!(row.ts, 1_000);
            assert_eq!(row.target.as_deref(), Some("yul"));
        }
        assert_eq!(rows[0].detail.as_deref(), Some("chargeback"));
        assert_eq!(rows[1].detail, None);
        assert!(
            rows[0]
                .before_json
                .as_deref()
                .unwrap()
                .contains("\"blocked\":false")
        );
        assert!(
            rows[0]
                .after_json
                .as_deref()
                .unwrap()
                .contains("\"blocked\":true")
        );
        assert!(
            rows[2]
                .before_json
                .as_deref()
                .unwrap()
                .contains("\"daily_tokens\":5")
        );
        assert_eq!(
            rows[2].after_json.as_deref(),
            serde_json::to_string(&change.after).ok().as_deref()
        );

        // A limit no store keeps is refused, and nothing is written, not even a new user.
        for user in ["yul", "new"] {
            let err = commit(
                &mut c,
                &work(Op::SetLimits {
                    user: user.into(),
                    patch: OverridesPatch {
                        monthly_tokens: Some(Some(u64::MAX)),
                        ..OverridesPatch::default()
                    },
                }),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        }
        assert_eq!(audit(&c).await.len(), 3);
        assert_eq!(user_controls(&c, "new").await.unwrap(), None);
        assert_eq!(
            user_controls(&c, "yul")
                .await
                .unwrap()
                .unwrap()
                .overrides
                .monthly_tokens,
            None
        );
    }

    #[tokio::test]
    async fn a_failing_audit_row_rolls_the_change_back() {
        let (_db, mut c) = db().await;
        commit(&mut c, &block("zed", None)).await.unwrap();
        c.batch_execute(
            "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'the audit trail is full'; END $$; \
             CREATE TRIGGER no_audit BEFORE INSERT ON admin_audit \
             FOR EACH ROW EXECUTE FUNCTION no_audit();",
        )
        .await
        .unwrap();
        let err = commit(&mut c, &work(Op::Unblock { user: "zed".into() }))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the audit trail is full"), "{err}");
        assert!(
            user_controls(&c, "zed").await.unwrap().unwrap().blocked,
            "rolled back"
        );
        let err = commit(&mut c, &block("new", None)).await.unwrap_err();
        assert!(err.to_string().contains("the audit trail is full"), "{err}");
        assert_eq!(user_controls(&c, "new").await.unwrap(), None, "not created");
        // The connection is usable afterwards (the failed transaction was rolled back).
        assert_eq!(count(&c, "SELECT count(*) FROM admin_audit").await, 1);
    }

    #[tokio::test]
    async fn accounts_sessions_and_reloads_are_audited_as_they_say() {
        let (_db, mut c) = db().await;
        let add = |name: &str| Op::AddAccount {
            name: name.into(),
            password_hash: "$argon2id$x".into(),
        };
        assert_eq!(
            commit(&mut c, &work(add("ops"))).await.unwrap(),
            Committed::Account { changed: true }
        );
        assert_eq!(
            commit(&mut c, &work(add("ops"))).await.unwrap(),
            Committed::Account { changed: false },
            "a taken name"
        );
        let sign_in = |token: &str, at_ms: i64, expires_at_ms: i64| Work {
            actor: "ops".into(),
            at_ms,
            op: Op::SignIn {
                token_sha256: token.into(),
                expires_at_ms,
                from: "127.0.0.1".into(),
            },
        };
        let Committed::Audited { audit_id } =
            commit(&mut c, &sign_in("aa", 2_000, 9_000)).await.unwrap()
        else {
            panic!("a sign-in answers its audit row")
        };
        assert!(audit_id > 0);
        assert_eq!(
            session(&c, "aa", 3_000)
                .await
                .unwrap()
                .map(|s| s.expires_at),
            Some(9_000)
        );
        assert_eq!(
            count(
                &c,
                "SELECT last_login_at FROM admin_accounts WHERE name = 'ops'"
            )
            .await,
            2_000
        );
        let failed = Work {
            actor: "ghost".into(),
            at_ms: 2_500,
            op: Op::SignInFailed {
                from: "10.0.0.9".into(),
            },
        };
        let Committed::Audited {
            audit_id: failed_id,
        } = commit(&mut c, &failed).await.unwrap()
        else {
            panic!("a refused sign-in answers its audit row")
        };
        assert!(failed_id > audit_id);
        let out = |token: &str| Work {
            actor: String::new(),
            at_ms: 3_000,
            op: Op::SignOut {
                token_sha256: token.into(),
            },
        };
        assert_eq!(
            commit(&mut c, &out("aa")).await.unwrap(),
            Committed::SignedOut {
                admin: Some("ops".into())
            }
        );
        assert_eq!(
            commit(&mut c, &out("aa")).await.unwrap(),
            Committed::SignedOut { admin: None }
        );
        let reload = Op::ConfigReload {
            applied: false,
            file: "gateway.toml".into(),
            before_json: Some("{\"a\":1}".into()),
            after_json: Some("{\"a\":2}".into()),
            detail: "SIGHUP: bad".into(),
        };
        assert_eq!(reload.action(), AuditAction::ConfigReloadRefused);
        commit(&mut c, &work(reload)).await.unwrap();
        assert_eq!(
            commit(
                &mut c,
                &work(Op::RemoveAccount {
                    name: "nobody".into()
                })
            )
            .await
            .unwrap(),
            Committed::Account { changed: false }
        );
        assert_eq!(
            commit(
                &mut c,
                &work(Op::SetPassword {
                    name: "nobody".into(),
                    password_hash: "h".into()
                })
            )
            .await
            .unwrap(),
            Committed::Account { changed: false }
        );

        let rows = audit(&c).await;
        let summary: Vec<(&str, &str, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.actor.as_str(),
                    r.action.as_str(),
                    r.target.as_deref(),
                    r.detail.as_deref(),
                )
            })
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
        assert_eq!(rows[1].id, audit_id);
        assert_eq!(rows[3].ts, 3_000);
        assert_eq!(
            (
                rows[4].before_json.as_deref(),
                rows[4].after_json.as_deref()
            ),
            (Some("{\"a\":1}"), Some("{\"a\":2}"))
        );
    }

    #[tokio::test]
    async fn a_new_password_or_a_removal_ends_sessions_and_a_sign_in_sweeps_expired_ones() {
        let (_db, mut c) = db().await;
        for name in ["ops", "dev"] {
            commit(
                &mut c,
                &work(Op::AddAccount {
                    name: name.into(),
                    password_hash: "old".into(),
                }),
            )
            .await
            .unwrap();
        }
        let sign_in = |admin: &str, token: &str, at_ms: i64| Work {
            actor: admin.into(),
            at_ms,
            op: Op::SignIn {
                token_sha256: token.into(),
                expires_at_ms: at_ms + 1_000,
                from: "::1".into(),
            },
        };
        commit(&mut c, &sign_in("ops", "o1", 100)).await.unwrap();
        commit(&mut c, &sign_in("dev", "d1", 100)).await.unwrap();
        // At 1 100 both expired; this sign-in sweeps them and keeps only its own.
        commit(&mut c, &sign_in("dev", "d2", 1_100)).await.unwrap();
        let tokens: Vec<String> = c
            .query("SELECT token_sha256 FROM admin_sessions", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(tokens, ["d2"]);
        commit(&mut c, &sign_in("ops", "o2", 1_200)).await.unwrap();

        assert_eq!(
            commit(
                &mut c,
                &work(Op::SetPassword {
                    name: "ops".into(),
                    password_hash: "new".into()
                })
            )
            .await
            .unwrap(),
            Committed::Account { changed: true }
        );
        assert_eq!(session(&c, "o2", 1_300).await.unwrap(), None);
        assert!(session(&c, "d2", 1_300).await.unwrap().is_some());
        assert_eq!(
            super::super::accounts::password_hash(&c, "ops")
                .await
                .unwrap()
                .as_deref(),
            Some("new")
        );
        assert_eq!(
            commit(&mut c, &work(Op::RemoveAccount { name: "dev".into() }))
                .await
                .unwrap(),
            Committed::Account { changed: true }
        );
        assert_eq!(session(&c, "d2", 1_300).await.unwrap(), None);
        assert_eq!(count(&c, "SELECT count(*) FROM admin_sessions").await, 0);
        let names: Vec<String> = super::super::accounts::list_accounts(&c)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["ops"]);
        let rows = audit(&c).await;
        let tail: Vec<(&str, Option<&str>)> = rows[rows.len() - 2..]
            .iter()
            .map(|r| (r.action.as_str(), r.target.as_deref()))
            .collect();
        assert_eq!(
            tail,
            [
                ("admin_set_password", Some("ops")),
                ("admin_remove", Some("dev"))
            ]
        );
    }

    /// Two gateways block the same user, who never called, at the same moment: the second waits
    /// for the first's transaction, then finds the row. One user row, two audit rows, and the
    /// second's "before" is the first's "after".
    #[tokio::test]
    async fn two_gateways_blocking_a_new_user_at_once_make_one_row_and_two_audit_rows() {
        let (db, mut a) = db().await;
        let settings: Settings = db.settings();
        let mut b = settings.connect().await.unwrap();

        let tx = a.transaction().await.unwrap();
        let first = controls(commit_in(&tx, &block("neo", Some("from a"))).await.unwrap());
        assert!(first.created);
        let second = tokio::spawn(async move {
            let second = commit(&mut b, &block("neo", Some("from b"))).await;
            (b, second)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second waits for the first's row"
        );
        tx.commit().await.unwrap();
        let (b, second) = second.await.unwrap();
        let second = controls(second.unwrap());
        assert!(!second.created, "created once");
        assert_eq!(second.before, first.after);
        assert_eq!(second.after.blocked_reason.as_deref(), Some("from b"));

        assert_eq!(
            count(&b, "SELECT count(*) FROM users WHERE id = 'neo'").await,
            1
        );
        let rows = audit(&b).await;
        let details: Vec<Option<&str>> = rows.iter().map(|r| r.detail.as_deref()).collect();
        assert_eq!(details, [Some("from a"), Some("from b")]);

        // And many at once, unsynchronised: exactly one of them created the row.
        let mut tasks = Vec::new();
        for i in 0..6 {
            let mut c = settings.connect().await.unwrap();
            tasks.push(tokio::spawn(async move {
                controls(
                    commit(&mut c, &block("crowd", Some(&format!("g{i}"))))
                        .await
                        .unwrap(),
                )
            }));
        }
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await.unwrap().created);
        }
        assert_eq!(created, 1);
        assert_eq!(
            count(&b, "SELECT count(*) FROM users WHERE id = 'crowd'").await,
            1
        );
        assert_eq!(
            count(
                &b,
                "SELECT count(*) FROM admin_audit WHERE target = 'crowd' AND action = 'block'"
            )
            .await,
            6
        );
    }

    /// Two gateways patch different limits of one user at once. The first holds the row (it
    /// has read it `FOR UPDATE` and not yet written) when the second starts: the second reads
    /// the row only once the first has committed, so neither patch is lost. (Had the second
    /// read without the lock, it would write its stale "before" back over the first's limit.)
    #[tokio::test]
    async fn concurrent_limit_patches_of_one_user_both_survive() {
        let (db, mut a) = db().await;
        commit(&mut a, &block("pat", None)).await.unwrap();
        let mut b = db.settings().connect().await.unwrap();
        let set = |patch: OverridesPatch| {
            work(Op::SetLimits {
                user: "pat".into(),
                patch,
            })
        };
        let tx = a.transaction().await.unwrap();
        tx.execute("SELECT 1 FROM users WHERE id = 'pat' FOR UPDATE", &[])
            .await
            .unwrap();
        let second = tokio::spawn(async move {
            commit(
                &mut b,
                &set(OverridesPatch {
                    monthly_tokens: Some(Some(7)),
                    ..OverridesPatch::default()
                }),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second waits for the row");
        let first = controls(
            commit_in(
                &tx,
                &set(OverridesPatch {
                    daily_tokens: Some(Some(5)),
                    ..OverridesPatch::default()
                }),
            )
            .await
            .unwrap(),
        );
        assert_eq!(first.after.overrides.monthly_tokens, None);
        tx.commit().await.unwrap();
        let second = controls(second.await.unwrap().unwrap());
        assert_eq!(second.before, first.after);
        assert_eq!(
            (
                second.after.overrides.daily_tokens,
                second.after.overrides.monthly_tokens
            ),
            (Some(5), Some(7))
        );
        let stored = user_controls(&a, "pat").await.unwrap().unwrap();
        assert_eq!(stored, second.after);
        assert!(stored.blocked);
    }

    /// Two sign-outs of one session at once: one ends it and is audited, the other finds none.
    #[tokio::test]
    async fn of_two_sign_outs_of_one_session_only_one_is_audited() {
        let (db, mut a) = db().await;
        commit(
            &mut a,
            &work(Op::AddAccount {
                name: "ops".into(),
                password_hash: "h".into(),
            }),
        )
        .await
        .unwrap();
        commit(
            &mut a,
            &Work {
                actor: "ops".into(),
                at_ms: 10,
                op: Op::SignIn {
                    token_sha256: "tt".into(),
                    expires_at_ms: 10_000,
                    from: "::1".into(),
                },
            },
        )
        .await
        .unwrap();
        let mut b = db.settings().connect().await.unwrap();
        let out = work(Op::SignOut {
            token_sha256: "tt".into(),
        });
        let (ra, rb) = tokio::join!(commit(&mut a, &out), commit(&mut b, &out));
        let mut admins = [ra.unwrap(), rb.unwrap()].map(|r| match r {
            Committed::SignedOut { admin } => admin,
            other => panic!("{other:?}"),
        });
        admins.sort();
        assert_eq!(admins, [None, Some("ops".to_string())]);
        assert_eq!(
            count(
                &a,
                "SELECT count(*) FROM admin_audit WHERE action = 'logout'"
            )
            .await,
            1
        );
    }

    /// What the store will hold is a pool's client: it commits and reads like a plain one.
    #[tokio::test]
    async fn a_pooled_client_commits_and_reads_like_a_plain_one() {
        let (db, _c) = db().await;
        let pool = db.settings().pool().unwrap();
        let mut pooled = pool.get().await.unwrap();
        commit(
            &mut pooled,
            &work(Op::AddAccount {
                name: "ops".into(),
                password_hash: "h".into(),
            }),
        )
        .await
        .unwrap();
        commit(&mut pooled, &block("pam", Some("x"))).await.unwrap();
        let accounts = super::super::accounts::list_accounts(&**pooled)
            .await
            .unwrap();
        assert_eq!(accounts.len(), 1);
        assert!(
            user_controls(&**pooled, "pam")
                .await
                .unwrap()
                .unwrap()
                .blocked
        );
        let seed = super::super::controls::load_quota_seed(&**pooled, "2025-06-10", "2025-06-01")
            .await
            .unwrap();
        assert!(seed.users["pam"].controls.blocked);
        let page = super::super::audit::audit_page(&**pooled, Some("pam"), None, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
    }
}
