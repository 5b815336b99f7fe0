//! Fault injection, a **test hook**: lets the black-box tests kill the seednode at an exact
//! point of the approval path instead of hoping a `kill -9` lands there.
//!
//! `CORDON_FAULT=approve:before-commit` aborts the process just before an approval's store
//! transaction commits; `CORDON_FAULT=approve:after-commit` aborts it just after the commit,
//! before the service replies to the operator or pushes the token to the node. Both back ends
//! (SQLite and PostgreSQL) have both points. The tests use them to prove that a crash there loses
//! no request and issues no second token.
//!
//! Invariants:
//! - The variable is read once, by [`arm_from_env`] when `seednode run` starts; unset (the
//!   normal case), every point is a load of an empty `OnceLock` and does nothing. Processes that
//!   never call [`arm_from_env`] (the operator CLI, `store migrate`, unit tests) are never armed.
//! - A value that names no point is ignored with a warning; it never stops the seednode.
//! - When a point is hit, one line naming it goes to stderr and the process calls
//!   [`std::process::abort`]: no destructors, no flush, no reply, as after `kill -9`.

use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub const FAULT_VAR: &str = "CORDON_FAULT";

/// A place in the seednode where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    /// `approve:before-commit`: the approval's transaction has done its writes, not committed.
    ApproveBeforeCommit,
    /// `approve:after-commit`: the approval's transaction has committed; nothing was replied
    /// or delivered yet.
    ApproveAfterCommit,
}

impl FaultPoint {
    /// The name used in [`FAULT_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::ApproveBeforeCommit => "approve:before-commit",
            FaultPoint::ApproveAfterCommit => "approve:after-commit",
        }
    }

    /// The point `name` names, if any.
    pub fn from_name(name: &str) -> Option<FaultPoint> {
        [
            FaultPoint::ApproveBeforeCommit,
            FaultPoint::ApproveAfterCommit,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// The armed point (`None` inside: the variable was unset or unusable).
static ARMED: OnceLock<Option<FaultPoint>> = OnceLock::new();

/// Reads [`FAULT_VAR`] once and arms the point it names. Later calls change nothing. An
/// unknown or non-UTF-8 value is ignored with a warning.
pub fn arm_from_env() {
    ARMED.get_or_init(|| {
        let value = std::env::var_os(FAULT_VAR)?;
        let point = value.to_str().and_then(FaultPoint::from_name);
        match point {
            Some(point) => tracing::warn!(
                point = point.name(),
                "{FAULT_VAR} is set: this seednode aborts at that point (a test hook)"
            ),
            None => tracing::warn!(
                value = ?value,
                "{FAULT_VAR} names no fault point; ignored (known: approve:before-commit, \
                 approve:after-commit)"
            ),
        }
        point
    });
}

/// Aborts the process at once if `point` is armed; otherwise does nothing.
pub(crate) fn hit(point: FaultPoint) {
    if ARMED.get().copied().flatten() == Some(point) {
        eprintln!("{FAULT_VAR}: aborting at fault point {}", point.name());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_arm_nothing() {
        for point in [
            FaultPoint::ApproveBeforeCommit,
            FaultPoint::ApproveAfterCommit,
        ] {
            assert_eq!(FaultPoint::from_name(point.name()), Some(point));
        }
        for hostile in [
            "",
            "approve",
            "approve:",
            "APPROVE:BEFORE-COMMIT",
            "approve:before-commit ",
        ] {
            assert_eq!(FaultPoint::from_name(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn an_unarmed_point_does_nothing() {
        // Unit tests never call `arm_from_env`, so this returns.
        hit(FaultPoint::ApproveBeforeCommit);
        hit(FaultPoint::ApproveAfterCommit);
    }
}
