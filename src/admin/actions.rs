//! An operator's change to a user — block, unblock, limits — made the one way that keeps the
//! store, the audit trail and the proxy's counters in step: the store commits the change and its
//! audit row in one unit of work, and only then does the quota ledger apply the committed state
//! to the user's next call. Changes take turns, so the ledger ends as the last commit left the
//! store.

use std::sync::Arc;

use crate::quota::{Change, Ledger, OverridesPatch, UserControls, validate_patch};
use crate::store::{Committed, Op, Store, StoreError, Work};

/// Why a change was not made; nothing changed, in the store or in memory.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Invalid(#[from] crate::quota::InvalidPatch),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes operators' changes to users. Cheap to clone.
#[derive(Clone)]
pub struct UserActions {
    store: Arc<dyn Store>,
    ledger: Arc<Ledger>,
    /// One change at a time, from commit to ledger.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl UserActions {
    pub fn new(store: Arc<dyn Store>, ledger: Arc<Ledger>) -> UserActions {
        UserActions {
            store,
            ledger,
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Block `user` (with an optional reason shown to operators): their next call gets 403;
    /// calls in flight finish. `actor` goes in the audit row.
    pub async fn block(
        &self,
        actor: &str,
        user: &str,
        reason: Option<String>,
    ) -> Result<Change<UserControls>, ActionError> {
        self.apply(
            actor,
            user,
            Op::Block {
                user: user.to_string(),
                reason,
            },
        )
        .await
    }

    /// Unblock `user`, clearing the reason.
    pub async fn unblock(
        &self,
        actor: &str,
        user: &str,
    ) -> Result<Change<UserControls>, ActionError> {
        self.apply(
            actor,
            user,
            Op::Unblock {
                user: user.to_string(),
            },
        )
        .await
    }

    /// Set or clear some of `user`'s limit overrides (validated first).
    pub async fn set_limits(
        &self,
        actor: &str,
        user: &str,
        patch: OverridesPatch,
    ) -> Result<Change<UserControls>, ActionError> {
        validate_patch(&patch)?;
        self.apply(
            actor,
            user,
            Op::SetLimits {
                user: user.to_string(),
                patch,
            },
        )
        .await
    }

    async fn apply(
        &self,
        actor: &str,
        user: &str,
        op: Op,
    ) -> Result<Change<UserControls>, ActionError> {
        let _turn = self.turn.lock().await;
        let work = Work {
            actor: actor.to_string(),
            at_ms: self.ledger.now().as_millisecond(),
            op,
        };
        match self.store.commit(work).await? {
            Committed::Controls(change) => {
                self.ledger.apply_controls(user, &change.after);
                Ok(*change)
            }
            other => Err(StoreError::Backend(format!(
                "the store answered a change to a user's controls with {other:?}"
            ))
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::config::LimitsConfig;
    use crate::quota::{Denied, Hold};
    use crate::store::sqlite::{Options, SqliteStore};

    fn rig() -> (
        tempfile::TempDir,
        Arc<SqliteStore>,
        Arc<Ledger>,
        UserActions,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            &dir.path().join("tollgate.db"),
            jiff::tz::TimeZone::UTC,
            Options::default(),
        )
        .unwrap();
        let ledger = Arc::new(Ledger::new(
            &LimitsConfig::default(),
            jiff::tz::TimeZone::UTC,
        ));
        let actions = UserActions::new(Arc::clone(&store) as Arc<dyn Store>, Arc::clone(&ledger));
        (dir, store, ledger, actions)
    }

    fn hold() -> Hold {
        Hold {
            tokens: 1,
            cost_nano_usd: 0,
        }
    }

    #[tokio::test]
    async fn a_committed_change_applies_to_the_next_call() {
        let (_dir, store, ledger, actions) = rig();
        let yul: Arc<str> = Arc::from("yul");
        let change = actions
            .block("root", "yul", Some("chargeback".into()))
            .await
            .unwrap();
        assert!(change.created && change.after.blocked);
        assert!(matches!(
            ledger.admit(&yul, hold()).unwrap_err(),
            Denied::Blocked { .. }
        ));
        actions.unblock("root", "yul").await.unwrap();
        let patch = OverridesPatch {
            daily_tokens: Some(Some(5)),
            ..OverridesPatch::default()
        };
        actions.set_limits("root", "yul", patch).await.unwrap();
        ledger.admit(&yul, hold()).unwrap().settle(5, 0);
        assert_eq!(
            ledger.admit(&yul, hold()).unwrap_err().code(),
            "daily_token_limit_reached"
        );

        // The store says the same to a ledger that starts over.
        let restarted = Ledger::new(&LimitsConfig::default(), jiff::tz::TimeZone::UTC);
        let (today, month) = restarted.seed_days();
        restarted.seed(&store.quota_seed(&today, &month).await.unwrap());
        assert_eq!(restarted.controls("yul"), ledger.controls("yul"));
        assert_eq!(restarted.status("yul").limits.daily_tokens, 5);

        let invalid = actions
            .set_limits(
                "root",
                "yul",
                OverridesPatch {
                    requests_per_minute: Some(Some(0)),
                    ..OverridesPatch::default()
                },
            )
            .await;
        assert!(matches!(invalid, Err(ActionError::Invalid(_))));
        store.close().await;
    }

    #[tokio::test]
    async fn a_change_the_store_refuses_leaves_memory_untouched() {
        let (dir, store, ledger, actions) = rig();
        actions.block("root", "zed", None).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("tollgate.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER no_audit BEFORE INSERT ON admin_audit \
             BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(matches!(
            actions.unblock("root", "zed").await,
            Err(ActionError::Store(_))
        ));
        assert!(ledger.controls("zed").blocked, "memory untouched");
        store.close().await;
    }
}
