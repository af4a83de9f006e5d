//! What a unit of work ([`Work`]) writes to the audit trail, whatever the backend: each store
//! makes the change in its transaction, then asks [`audit_entry`] for the row to insert in the
//! same transaction (`None`: nothing to audit, e.g. an account name already taken), and hands
//! back [`with_audit_id`] of what it did. The row's contents — target, detail, the controls'
//! JSON before and after — are decided here only, so that both stores audit alike.

use crate::quota::{Change, UserControls};
use crate::store::{AuditAction, Committed, Op, StoreError, Work};

/// One admin action, as written to `admin_audit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix ms UTC.
    pub ts: i64,
    /// The admin account or admin JWT subject; `"system"` for reloads nobody asked for through
    /// the API (file watch, SIGHUP); for a failed sign-in, the name that was tried.
    pub actor: String,
    pub action: AuditAction,
    /// Usually a user id.
    pub target: Option<String>,
    /// JSON of the state before and after the action, when it has one.
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    /// Free text: a block reason, the client address of a sign-in, why a reload was refused.
    pub detail: Option<String>,
}

/// The audit row of `work`, given what its change did (`done`; an audit-only unit's
/// `audit_id` is not looked at). `Ok(None)` when nothing is audited: an account change that
/// matched nothing, a sign-out of no session. A `done` that is not what `work`'s change returns
/// is a bug in the store, refused rather than audited wrongly.
pub fn audit_entry(work: &Work, done: &Committed) -> Result<Option<AuditEntry>, StoreError> {
    let entry = |target: Option<&str>, detail: Option<String>| AuditEntry {
        ts: work.at_ms,
        actor: work.actor.clone(),
        action: work.op.action(),
        target: target.map(str::to_owned),
        before_json: None,
        after_json: None,
        detail,
    };
    let audit = match (&work.op, done) {
        (Op::Block { user, reason }, Committed::Controls(change)) => {
            Some(with_change(entry(Some(user), reason.clone()), change))
        }
        (Op::Unblock { user } | Op::SetLimits { user, .. }, Committed::Controls(change)) => {
            Some(with_change(entry(Some(user), None), change))
        }
        (
            Op::AddAccount { name, .. } | Op::SetPassword { name, .. } | Op::RemoveAccount { name },
            Committed::Account { changed },
        ) => changed.then(|| entry(Some(name), None)),
        (Op::SignIn { from, .. } | Op::SignInFailed { from }, Committed::Audited { .. }) => {
            Some(entry(None, Some(format!("from {from}"))))
        }
        (Op::SignOut { .. }, Committed::SignedOut { admin }) => {
            admin.as_ref().map(|admin| AuditEntry {
                actor: admin.clone(),
                ..entry(None, None)
            })
        }
        (
            Op::ConfigReload {
                applied: _,
                file,
                before_json,
                after_json,
                detail,
            },
            Committed::Audited { .. },
        ) => Some(AuditEntry {
            before_json: before_json.clone(),
            after_json: after_json.clone(),
            ..entry(Some(file), Some(detail.clone()))
        }),
        (op, done) => {
            return Err(StoreError::Backend(format!(
                "the store answered {done:?} to {}",
                op.action().as_str()
            )));
        }
    };
    Ok(audit)
}

/// What the unit of work returns once its audit row (if any) is `audit_id`: an audit-only
/// unit reports the row's id, every other answer stays as it is.
pub fn with_audit_id(done: Committed, audit_id: Option<i64>) -> Committed {
    match (done, audit_id) {
        (Committed::Audited { .. }, Some(audit_id)) => Committed::Audited { audit_id },
        (done, _) => done,
    }
}

/// The audit row of a change to a user's controls: their JSON before and after.
fn with_change(mut entry: AuditEntry, change: &Change<UserControls>) -> AuditEntry {
    let json = |c: &UserControls| serde_json::to_string(c).ok();
    entry.before_json = json(&change.before);
    entry.after_json = json(&change.after);
    entry
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn work(op: Op) -> Work {
        Work {
            actor: "root".into(),
            at_ms: 7,
            op,
        }
    }

    #[test]
    fn each_change_names_its_target_and_detail() {
        let block = work(Op::Block {
            user: "ann".into(),
            reason: Some("spam".into()),
        });
        let change = Change {
            before: UserControls::default(),
            after: UserControls {
                blocked: true,
                blocked_reason: Some("spam".into()),
                ..UserControls::default()
            },
            created: true,
        };
        let e = audit_entry(&block, &Committed::Controls(Box::new(change)))
            .unwrap()
            .unwrap();
        assert_eq!((e.ts, e.actor.as_str()), (7, "root"));
        assert_eq!(e.action, AuditAction::Block);
        assert_eq!(e.target.as_deref(), Some("ann"));
        assert_eq!(e.detail.as_deref(), Some("spam"));
        assert!(e.before_json.unwrap().contains("\"blocked\":false"));
        assert!(e.after_json.unwrap().contains("\"blocked\":true"));

        let taken = work(Op::AddAccount {
            name: "ops".into(),
            password_hash: "h".into(),
        });
        assert_eq!(
            audit_entry(&taken, &Committed::Account { changed: false }).unwrap(),
            None
        );
        let out = work(Op::SignOut {
            token_sha256: "aa".into(),
        });
        let e = audit_entry(
            &out,
            &Committed::SignedOut {
                admin: Some("ops".into()),
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.actor, "ops", "the session's admin, not the work's actor");
        assert_eq!(
            audit_entry(&out, &Committed::SignedOut { admin: None }).unwrap(),
            None
        );
        // A store that answers the wrong thing is refused.
        assert!(audit_entry(&out, &Committed::Account { changed: true }).is_err());
        assert_eq!(
            with_audit_id(Committed::Audited { audit_id: 0 }, Some(9)),
            Committed::Audited { audit_id: 9 }
        );
        assert_eq!(
            with_audit_id(Committed::Account { changed: true }, Some(9)),
            Committed::Account { changed: true }
        );
    }
}
