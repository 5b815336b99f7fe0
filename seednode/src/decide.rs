//! What the join service does with a join request, as a pure function: no database, no
//! clock, no async.
//!
//! [`decide`] is handed what the peer got before on the network (its latest request and that
//! request's token, [`Previous`]), the network's [`JoinPolicy`], whether the peer offered an
//! invite code, the lifetime bounds ([`Lifetimes`]) and `now`, and answers with a
//! [`Decision`]. The service reads the inputs from its store, then carries the decision out
//! (queueing, redeeming an invite and issuing are the store's and the issuer's work). The
//! rules are those of the [service](crate::service) module docs:
//!
//! - a peer holding a live, unrevoked token not yet within the renewal margin gets that token
//!   again ([`Decision::ReturnExisting`]);
//! - within the margin it gets a fresh token with the same roles, whatever the policy
//!   ([`Decision::Renew`]), but only if the fresh token would expire later than the one it
//!   replaces (a near-expiry delegation would otherwise make every request issue a token);
//! - a live token issued under another delegation than the seednode holds now (the anchor
//!   was rotated, or the delegation renewed) is renewed at once, margin or not, so members
//!   move to the new delegation before the old anchor is removed;
//! - an operator's denial of the latest request, or a revocation of its token, sticks: the
//!   request waits for an operator even on `open` and `invite` networks
//!   ([`Wait::OperatorDecided`]), and no invite is consumed;
//! - otherwise the policy decides: `open` approves, `invite` approves with a code (which the
//!   store redeems atomically) and queues without one, `approval` queues. A pending request
//!   is decided like a new one; the store makes asking again idempotent.

use std::time::Duration;

use cordon_host::descriptor::JoinPolicy;

/// What the peer got before on this network: its latest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous<'a> {
    /// Still pending.
    Pending,
    /// Denied; `by_operator` unless a policy denied it.
    Denied {
        /// Whether an operator denied it.
        by_operator: bool,
    },
    /// Approved, with the token issued for it (`None` if the store holds none).
    Approved {
        /// The token.
        token: Option<PreviousToken<'a>>,
    },
}

/// The token issued for the peer's latest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousToken<'a> {
    /// Expiry (unix seconds); live while `now < expires_at`.
    pub expires_at: u64,
    /// Whether an operator revoked it.
    pub revoked: bool,
    /// Its roles (a renewal keeps them).
    pub roles: &'a [String],
    /// Its explicit rights (a renewal keeps them too).
    pub rights: &'a [String],
    /// Whether it chains to the delegation the seednode holds now.
    pub current_delegation: bool,
}

/// The lifetime settings of a network and the bounds of the seednode's delegation for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Lifetime of an automatically issued token, from the descriptor.
    pub token_lifetime: Duration,
    /// A live token this close to its expiry is renewed, from the descriptor.
    pub renewal_margin: Duration,
    /// Longest token the delegation allows.
    pub max_lifetime: Duration,
    /// When the delegation ends (unix seconds); no token may outlive it.
    pub delegation_expires_at: u64,
}

impl Lifetimes {
    /// `wanted`, shortened so a token issued at `now` fits the delegation's bounds (zero once
    /// the delegation has ended).
    pub fn clamp(&self, wanted: Duration, now: u64) -> Duration {
        let remaining = self.delegation_expires_at.saturating_sub(now);
        Duration::from_secs(
            wanted
                .as_secs()
                .min(self.max_lifetime.as_secs())
                .min(remaining),
        )
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFacts<'a> {
    /// The peer's latest request for the network, if any.
    pub previous: Option<Previous<'a>>,
    /// The network's join policy.
    pub policy: JoinPolicy,
    /// Whether the request carries an invite code (valid or not: the store decides that).
    pub invite_offered: bool,
    /// Lifetime settings and bounds.
    pub lifetimes: Lifetimes,
    /// Now (unix seconds).
    pub now: u64,
}

/// What to do with a join request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with the live token the peer already holds (its latest request's).
    ReturnExisting,
    /// Issue a fresh token with these roles and rights (the expiring token's) at once: a
    /// renewal.
    Renew {
        /// The roles.
        roles: Vec<String>,
        /// The explicit rights.
        rights: Vec<String>,
    },
    /// Approve at once by the network's policy, with the default roles.
    ApproveByPolicy(PolicyApproval),
    /// Queue the request (or keep the pending one) for an operator.
    Queue(Wait),
}

/// Which policy approves a request at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyApproval {
    /// The network is `open`.
    Open,
    /// The network is `invite` and the request carries a code; the store redeems it in the
    /// transaction that records the request, and refuses the request if it cannot.
    Invite,
}

/// Why a request waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The policy says so: `approval`, or `invite` without a code.
    Policy,
    /// An operator denied the peer's latest request or revoked its token; that sticks.
    OperatorDecided,
}

impl Decision {
    /// What the store records as `decided_by_policy` when this decision approves a request.
    pub fn decided_by(&self) -> Option<&'static str> {
        match self {
            Self::Renew { .. } => Some("renewal"),
            Self::ApproveByPolicy(PolicyApproval::Open) => Some("open"),
            Self::ApproveByPolicy(PolicyApproval::Invite) => Some("invite"),
            Self::ReturnExisting | Self::Queue(_) => None,
        }
    }
}

/// Decides a join request: see the [module documentation](self).
pub fn decide(facts: &JoinFacts<'_>) -> Decision {
    let now = facts.now;
    match &facts.previous {
        Some(Previous::Denied { by_operator: true }) => {
            return Decision::Queue(Wait::OperatorDecided);
        }
        Some(Previous::Approved { token: Some(token) }) if token.revoked => {
            return Decision::Queue(Wait::OperatorDecided);
        }
        Some(Previous::Approved { token: Some(token) }) if token.expires_at > now => {
            let margin = facts.lifetimes.renewal_margin.as_secs();
            let renew_from = token.expires_at.saturating_sub(margin);
            let lifetime = facts
                .lifetimes
                .clamp(facts.lifetimes.token_lifetime, now)
                .as_secs();
            let renewal_expires = now.saturating_add(lifetime);
            let due = now >= renew_from && renewal_expires > token.expires_at;
            if token.current_delegation && !due {
                return Decision::ReturnExisting;
            }
            return Decision::Renew {
                roles: token.roles.to_vec(),
                rights: token.rights.to_vec(),
            };
        }
        // Pending, expired, denied by a policy, or approved without a token: the policy
        // decides as for a first request.
        _ => {}
    }
    match (facts.policy, facts.invite_offered) {
        (JoinPolicy::Open, _) => Decision::ApproveByPolicy(PolicyApproval::Open),
        (JoinPolicy::Invite, true) => Decision::ApproveByPolicy(PolicyApproval::Invite),
        (JoinPolicy::Invite, false) | (JoinPolicy::Approval, _) => Decision::Queue(Wait::Policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_700_000_000;
    const POLICIES: [JoinPolicy; 3] = [JoinPolicy::Approval, JoinPolicy::Invite, JoinPolicy::Open];

    /// 7-day tokens renewed in their last day; a 30-day delegation bound, a year left of it.
    fn lifetimes() -> Lifetimes {
        Lifetimes {
            token_lifetime: Duration::from_secs(7 * DAY),
            renewal_margin: Duration::from_secs(DAY),
            max_lifetime: Duration::from_secs(30 * DAY),
            delegation_expires_at: T0 + 365 * DAY,
        }
    }

    fn facts(previous: Option<Previous<'_>>, policy: JoinPolicy, invite: bool) -> JoinFacts<'_> {
        JoinFacts {
            previous,
            policy,
            invite_offered: invite,
            lifetimes: lifetimes(),
            now: T0,
        }
    }

    fn approved(expires_at: u64, revoked: bool, roles: &[String]) -> Option<Previous<'_>> {
        Some(Previous::Approved {
            token: Some(PreviousToken {
                expires_at,
                revoked,
                roles,
                rights: &[],
                current_delegation: true,
            }),
        })
    }

    fn ops() -> Vec<String> {
        vec!["ops".to_owned()]
    }

    #[test]
    fn first_request_is_decided_by_the_policy() {
        let decide_first = |policy, invite| decide(&facts(None, policy, invite));
        assert_eq!(
            decide_first(JoinPolicy::Open, false),
            Decision::ApproveByPolicy(PolicyApproval::Open)
        );
        assert_eq!(
            decide_first(JoinPolicy::Open, true),
            Decision::ApproveByPolicy(PolicyApproval::Open)
        );
        assert_eq!(
            decide_first(JoinPolicy::Invite, true),
            Decision::ApproveByPolicy(PolicyApproval::Invite)
        );
        assert_eq!(
            decide_first(JoinPolicy::Invite, false),
            Decision::Queue(Wait::Policy)
        );
        // An approval network never approves by itself, code or not.
        assert_eq!(
            decide_first(JoinPolicy::Approval, false),
            Decision::Queue(Wait::Policy)
        );
        assert_eq!(
            decide_first(JoinPolicy::Approval, true),
            Decision::Queue(Wait::Policy)
        );
    }

    #[test]
    fn a_pending_request_is_decided_like_a_new_one() {
        // Asking again is idempotent in the store (the same request comes back); the decision
        // is the policy's, so a code sent later still approves the pending request.
        for (policy, invite) in [
            (JoinPolicy::Approval, true),
            (JoinPolicy::Invite, false),
            (JoinPolicy::Invite, true),
            (JoinPolicy::Open, false),
        ] {
            assert_eq!(
                decide(&facts(Some(Previous::Pending), policy, invite)),
                decide(&facts(None, policy, invite)),
                "{policy} invite={invite}"
            );
        }
    }

    #[test]
    fn a_live_token_outside_the_margin_is_returned_under_every_policy() {
        let roles = ops();
        for policy in POLICIES {
            for invite in [false, true] {
                let f = facts(approved(T0 + 5 * DAY, false, &roles), policy, invite);
                assert_eq!(decide(&f), Decision::ReturnExisting, "{policy}");
            }
        }
        // One second before the margin starts.
        let f = facts(
            approved(T0 + DAY + 1, false, &roles),
            JoinPolicy::Open,
            false,
        );
        assert_eq!(decide(&f), Decision::ReturnExisting);
    }

    #[test]
    fn a_live_token_of_an_earlier_delegation_is_renewed_at_once_with_its_rights() {
        let roles = ops();
        let rights = vec!["dht_put".to_owned()];
        for policy in POLICIES {
            // Far outside the margin, and even when the new token would end sooner.
            for expires_at in [T0 + 5 * DAY, T0 + 400 * DAY] {
                let f = facts(
                    Some(Previous::Approved {
                        token: Some(PreviousToken {
                            expires_at,
                            revoked: false,
                            roles: &roles,
                            rights: &rights,
                            current_delegation: false,
                        }),
                    }),
                    policy,
                    false,
                );
                assert_eq!(
                    decide(&f),
                    Decision::Renew {
                        roles: ops(),
                        rights: rights.clone()
                    },
                    "{policy}"
                );
            }
            // A revoked one is not, whatever its delegation.
            let f = facts(
                Some(Previous::Approved {
                    token: Some(PreviousToken {
                        expires_at: T0 + 5 * DAY,
                        revoked: true,
                        roles: &roles,
                        rights: &rights,
                        current_delegation: false,
                    }),
                }),
                policy,
                false,
            );
            assert_eq!(decide(&f), Decision::Queue(Wait::OperatorDecided));
        }
    }

    #[test]
    fn renewal_inside_the_margin_keeps_the_roles_under_every_policy() {
        let roles = ops();
        for policy in POLICIES {
            // The margin starts exactly one day before expiry.
            for expires_at in [T0 + DAY, T0 + 1] {
                let f = facts(approved(expires_at, false, &roles), policy, false);
                let decision = decide(&f);
                assert_eq!(
                    decision,
                    Decision::Renew {
                        roles: ops(),
                        rights: Vec::new()
                    },
                    "{policy}"
                );
                assert_eq!(decision.decided_by(), Some("renewal"));
            }
        }
    }

    #[test]
    fn renewal_keeps_explicit_rights_and_a_revoked_token_is_not_renewed() {
        let roles = ops();
        let rights = vec!["dht_put".to_owned()];
        let previous = |revoked| {
            Some(Previous::Approved {
                token: Some(PreviousToken {
                    expires_at: T0 + 1,
                    revoked,
                    roles: &roles,
                    rights: &rights,
                    current_delegation: true,
                }),
            })
        };
        let f = facts(previous(false), JoinPolicy::Approval, false);
        assert_eq!(
            decide(&f),
            Decision::Renew {
                roles: ops(),
                rights: vec!["dht_put".to_owned()]
            }
        );
        let f = facts(previous(true), JoinPolicy::Open, false);
        assert_eq!(decide(&f), Decision::Queue(Wait::OperatorDecided));
    }

    #[test]
    fn renewal_only_if_the_fresh_token_expires_later() {
        let roles = ops();
        // The delegation ends in 12 hours: a renewal could not outlive the current token.
        let mut f = facts(
            approved(T0 + DAY / 2, false, &roles),
            JoinPolicy::Open,
            false,
        );
        f.lifetimes.delegation_expires_at = T0 + DAY / 2;
        assert_eq!(decide(&f), Decision::ReturnExisting);
        // One second later than the current token is enough.
        f.lifetimes.delegation_expires_at = T0 + DAY / 2 + 1;
        assert_eq!(
            decide(&f),
            Decision::Renew {
                roles: ops(),
                rights: Vec::new()
            }
        );
        // A token lifetime shorter than what is left is no renewal either.
        let mut f = facts(approved(T0 + DAY, false, &roles), JoinPolicy::Open, false);
        f.lifetimes.token_lifetime = Duration::from_secs(DAY);
        assert_eq!(decide(&f), Decision::ReturnExisting);
    }

    #[test]
    fn an_operator_denial_sticks() {
        for policy in POLICIES {
            for invite in [false, true] {
                let f = facts(Some(Previous::Denied { by_operator: true }), policy, invite);
                assert_eq!(
                    decide(&f),
                    Decision::Queue(Wait::OperatorDecided),
                    "{policy}"
                );
            }
        }
        // A denial no operator made does not.
        let f = facts(
            Some(Previous::Denied { by_operator: false }),
            JoinPolicy::Open,
            false,
        );
        assert_eq!(decide(&f), Decision::ApproveByPolicy(PolicyApproval::Open));
    }

    #[test]
    fn a_revocation_sticks_even_for_a_live_token_in_the_margin() {
        let roles = ops();
        for policy in POLICIES {
            for expires_at in [T0 + 5 * DAY, T0 + 1, T0 - 1] {
                let f = facts(approved(expires_at, true, &roles), policy, true);
                let decision = decide(&f);
                assert_eq!(decision, Decision::Queue(Wait::OperatorDecided), "{policy}");
                assert_eq!(decision.decided_by(), None);
            }
        }
    }

    #[test]
    fn an_expired_token_leaves_the_decision_to_the_policy() {
        let roles = ops();
        // Expiry is exclusive: at expires_at the token is gone.
        for expires_at in [T0, T0 - DAY] {
            let open = facts(approved(expires_at, false, &roles), JoinPolicy::Open, false);
            assert_eq!(
                decide(&open),
                Decision::ApproveByPolicy(PolicyApproval::Open)
            );
            let approval = facts(
                approved(expires_at, false, &roles),
                JoinPolicy::Approval,
                false,
            );
            assert_eq!(decide(&approval), Decision::Queue(Wait::Policy));
        }
        // An approval whose token the store lost is treated the same way.
        let lost = facts(
            Some(Previous::Approved { token: None }),
            JoinPolicy::Invite,
            true,
        );
        assert_eq!(
            decide(&lost),
            Decision::ApproveByPolicy(PolicyApproval::Invite)
        );
    }

    #[test]
    fn decided_by_names_the_policy_recorded() {
        assert_eq!(
            Decision::ApproveByPolicy(PolicyApproval::Open).decided_by(),
            Some("open")
        );
        assert_eq!(
            Decision::ApproveByPolicy(PolicyApproval::Invite).decided_by(),
            Some("invite")
        );
        assert_eq!(Decision::ReturnExisting.decided_by(), None);
        assert_eq!(Decision::Queue(Wait::Policy).decided_by(), None);
    }

    #[test]
    fn lifetimes_are_clamped_to_the_delegation() {
        let l = lifetimes();
        let wanted = Duration::from_secs(60 * DAY);
        assert_eq!(l.clamp(wanted, T0), Duration::from_secs(30 * DAY));
        assert_eq!(
            l.clamp(Duration::from_secs(DAY), T0),
            Duration::from_secs(DAY)
        );
        assert_eq!(
            l.clamp(wanted, T0 + 364 * DAY),
            Duration::from_secs(DAY),
            "no token outlives the delegation"
        );
        assert_eq!(l.clamp(wanted, T0 + 366 * DAY), Duration::ZERO);
    }
}
