//! Approval requests and the signed decisions that answer them.
//!
//! The desktop writes an [`Approval`] for every tool call its policy marks `ask`; it carries an
//! *action hash* binding the tool, its exact arguments, the approval id, the expiry and the
//! desktop. A phone answers with a [`Decision`] signed over that hash, the verdict and the same
//! identifiers, so a decision cannot be moved to another request, another desktop or another
//! verdict. [`resolve`] is the desktop's rule for acting on the decisions it has: expired means
//! deny, any valid deny wins, otherwise the first valid approve.

use std::collections::BTreeMap;

use autosurgeon::{Hydrate, Reconcile};
use sha2::{Digest, Sha256};

use crate::identity::{DeviceKey, verify};
use crate::ids::{ApprovalId, DeviceId, TaskId};

string_enum!(
    /// A phone's answer to an approval request.
    Verdict { Approve => "approve", Deny => "deny" }
);
string_enum!(
    /// How much a call can change, shown to the person deciding.
    Risk { Low => "low", Medium => "medium", High => "high" }
);

/// An approval request, written by the desktop into `approvals/<id>`.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct Approval {
    /// Unique id (also the key in `approvals`).
    pub id: ApprovalId,
    /// The task whose call waits.
    pub task_id: TaskId,
    /// Tool name, e.g. `trash`.
    pub tool: String,
    /// The exact arguments, as canonical JSON text.
    pub args: String,
    /// One line a person understands, e.g. "Move ~/notes.txt to the Deskhand trash".
    pub summary: String,
    /// How much the call can change.
    pub risk: Risk,
    /// [`action_hash`] of this request, lower-case hex.
    pub action_hash: String,
    /// Unix milliseconds.
    pub requested_at: i64,
    /// After this instant (unix ms) the request counts as denied.
    pub expires_at: i64,
    /// Decisions by device id (each device writes only its own).
    #[autosurgeon(missing = "BTreeMap::new")]
    pub decisions: BTreeMap<String, Decision>,
    /// How the desktop resolved it, once it has.
    #[autosurgeon(missing = "Option::default")]
    pub resolution: Option<Resolution>,
}

/// A device's signed answer, at `approvals/<id>/decisions/<device id>`.
#[derive(Clone, Debug, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize)]
pub struct Decision {
    /// Approve or deny.
    pub verdict: Verdict,
    /// When it was decided (unix ms, the phone's clock; informative only).
    pub at: i64,
    /// ed25519 signature over [`decision_message`], lower-case hex.
    pub signature: String,
}

/// The desktop's resolution of a request.
#[derive(Clone, Debug, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize)]
pub struct Resolution {
    /// What was done.
    pub verdict: Verdict,
    /// The deciding device id, or `expired`.
    pub by: String,
    /// Unix milliseconds.
    pub at: i64,
    /// Why, for a person (e.g. "approved on Pixel", "expired after 5 min").
    #[autosurgeon(missing = "String::new")]
    pub reason: String,
    /// The devices whose decisions the desktop had when it resolved. A phone whose decision is
    /// not listed decided too late: it was not acted on. `None` in resolutions written before
    /// this field existed.
    #[autosurgeon(missing = "Option::default")]
    pub counted: Option<Vec<String>>,
}

impl Resolution {
    /// Whether `device`'s decision was in when the desktop resolved (unknown for resolutions
    /// from before this was recorded: then `true`).
    pub fn counted(&self, device: &str) -> bool {
        self.counted
            .as_ref()
            .is_none_or(|c| c.iter().any(|d| d == device))
    }
}

/// Why a decision was not acted on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// The key under which it is stored is not a device id.
    #[error("decision stored under {0:?}, which is not a device id")]
    NotADevice(String),
    /// The device is not paired (or was revoked).
    #[error("decision by {0}, which is not a paired device")]
    UnknownDevice(String),
    /// The signature is not valid hex of 64 bytes.
    #[error("decision by {0} carries a malformed signature")]
    Malformed(String),
    /// The signature does not cover this exact action, verdict and desktop.
    #[error("decision by {0} has a signature that does not match this action (forged or replayed)")]
    BadSignature(String),
}

/// Hash binding a call to one request on one desktop: SHA-256 over length-prefixed fields.
pub fn action_hash(
    tool: &str,
    args: &str,
    approval: &ApprovalId,
    expires_at: i64,
    desktop: &DeviceId,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"deskhand/action/1\0");
    for field in [
        tool.as_bytes(),
        args.as_bytes(),
        approval.as_str().as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.update(expires_at.to_be_bytes());
    h.update(desktop.as_bytes());
    h.finalize().into()
}

/// The bytes a phone signs to decide: approval id, action hash, verdict, expiry and desktop id.
pub fn decision_message(
    approval: &ApprovalId,
    action_hash: &[u8; 32],
    verdict: Verdict,
    expires_at: i64,
    desktop: &DeviceId,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(b"deskhand/decision/1\0");
    m.extend_from_slice(&(approval.as_str().len() as u64).to_be_bytes());
    m.extend_from_slice(approval.as_str().as_bytes());
    m.extend_from_slice(action_hash);
    m.extend_from_slice(verdict.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(desktop.as_bytes());
    m
}

impl Approval {
    /// Builds a request and computes its action hash.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ApprovalId,
        task_id: TaskId,
        tool: &str,
        args: &str,
        summary: &str,
        risk: Risk,
        requested_at: i64,
        expires_at: i64,
        desktop: &DeviceId,
    ) -> Self {
        let hash = action_hash(tool, args, &id, expires_at, desktop);
        Self {
            id,
            task_id,
            tool: tool.to_owned(),
            args: args.to_owned(),
            summary: summary.to_owned(),
            risk,
            action_hash: hex::encode(hash),
            requested_at,
            expires_at,
            decisions: BTreeMap::new(),
            resolution: None,
        }
    }

    /// Whether the stored hash matches the tool, arguments, id and expiry shown, for `desktop`.
    /// A phone checks this before signing, so it never signs something other than what it shows.
    pub fn hash_matches(&self, desktop: &DeviceId) -> bool {
        let expected = action_hash(&self.tool, &self.args, &self.id, self.expires_at, desktop);
        hex::encode(expected) == self.action_hash
    }

    /// Signs a decision on this request with the phone's key.
    pub fn sign(&self, key: &DeviceKey, desktop: &DeviceId, verdict: Verdict, at: i64) -> Decision {
        let hash = action_hash(&self.tool, &self.args, &self.id, self.expires_at, desktop);
        let msg = decision_message(&self.id, &hash, verdict, self.expires_at, desktop);
        Decision {
            verdict,
            at,
            signature: hex::encode(key.sign(&msg)),
        }
    }
}

/// Checks one stored decision against the action the desktop holds.
pub fn verify_decision(
    approval: &ApprovalId,
    action_hash: &[u8; 32],
    expires_at: i64,
    desktop: &DeviceId,
    by: &DeviceId,
    decision: &Decision,
) -> Result<(), DecisionError> {
    let who = by.short();
    let sig: [u8; 64] = hex::decode(&decision.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DecisionError::Malformed(who.clone()))?;
    let msg = decision_message(approval, action_hash, decision.verdict, expires_at, desktop);
    verify(by, &msg, &sig).map_err(|_| DecisionError::BadSignature(who))
}

/// How the desktop combines the decisions of several phones on one request. In every rule a
/// valid deny that reaches the desktop before it resolves wins, and a request still open at
/// its expiry (the desktop's clock) is denied. Time is the desktop's, never a phone's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionRule {
    /// The first valid approve acts once `settle_ms` milliseconds have passed since the desktop
    /// first saw an approve, unless a valid deny arrives meanwhile. With one phone paired, or
    /// once every paired phone has approved, it acts at once (nobody is left to deny).
    Settle {
        /// The settle window in milliseconds.
        settle_ms: i64,
    },
    /// Every paired, unrevoked phone approves.
    Unanimous,
    /// `n` different paired phones approve (every paired phone when fewer than `n` are paired);
    /// a deny before the `n`-th approve wins. `n = 1` is "the first approve acts at once".
    NOfM {
        /// Approvals needed (at least 1).
        n: u32,
    },
}

impl DecisionRule {
    /// The rule in a few words, for a resolution's reason and the logs.
    pub fn describe(&self) -> String {
        match self {
            DecisionRule::Settle { settle_ms } => format!(
                "the first approve after a {} s settle window in which any deny wins",
                *settle_ms as f64 / 1000.0
            ),
            DecisionRule::Unanimous => "every paired phone approves".into(),
            DecisionRule::NOfM { n } => format!("{n} paired phones approve"),
        }
    }
}

/// What the desktop should do about a request now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not enough valid decisions yet and not expired: keep waiting.
    Pending,
    /// Approved, but the settle window is open: look again at `until` (desktop Unix ms). `since`
    /// is when the window opened: the caller keeps it and passes it back.
    Settling {
        /// When the desktop first saw an approve (Unix ms, its clock).
        since: i64,
        /// When the window closes.
        until: i64,
    },
    /// Act: approve or deny, by this device (or `None` when it expired).
    Resolved {
        /// The verdict to carry out.
        verdict: Verdict,
        /// The device whose decision is acted on (for a rule that needs several approvals, the
        /// one that completed it); `None` when the request expired.
        by: Option<DeviceId>,
        /// Every device whose valid decision the desktop had when it resolved; a decision that
        /// arrives later came too late and is not acted on.
        counted: Vec<DeviceId>,
    },
}

/// The desktop's rule, given the action it holds (`tool`, `args`: its own copy, not the
/// document's), the current time on the desktop's clock, the paired and unrevoked phones
/// (`voters`), the decision `rule`, and when it first saw an approve (`approve_seen`, from an
/// earlier [`Outcome::Settling`]).
///
/// Returns the outcome and every decision that was ignored, with why (for the audit log).
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    approval: &Approval,
    tool: &str,
    args: &str,
    desktop: &DeviceId,
    now: i64,
    voters: &[DeviceId],
    rule: DecisionRule,
    approve_seen: Option<i64>,
) -> (Outcome, Vec<DecisionError>) {
    let hash = action_hash(tool, args, &approval.id, approval.expires_at, desktop);
    let mut ignored = Vec::new();
    // Valid decisions, each (phone's time, device): the phone's time only orders who is named.
    let mut denies: Vec<(i64, DeviceId)> = Vec::new();
    let mut approves: Vec<(i64, DeviceId)> = Vec::new();
    for (key, decision) in &approval.decisions {
        let Ok(by) = key.parse::<DeviceId>() else {
            ignored.push(DecisionError::NotADevice(key.clone()));
            continue;
        };
        if !voters.contains(&by) {
            ignored.push(DecisionError::UnknownDevice(by.short()));
            continue;
        }
        if let Err(e) = verify_decision(
            &approval.id,
            &hash,
            approval.expires_at,
            desktop,
            &by,
            decision,
        ) {
            ignored.push(e);
            continue;
        }
        match decision.verdict {
            Verdict::Deny => denies.push((decision.at, by)),
            Verdict::Approve => approves.push((decision.at, by)),
        }
    }
    denies.sort();
    approves.sort();
    let counted: Vec<DeviceId> = approves.iter().chain(&denies).map(|(_, d)| *d).collect();
    let resolved = |verdict, by| Outcome::Resolved {
        verdict,
        by,
        counted: counted.clone(),
    };
    let first_deny = denies.first().map(|(_, d)| *d);
    let outcome = if now >= approval.expires_at {
        // Expiry is checked on the desktop's clock, after verification, so a late approve never
        // counts, however it is signed.
        resolved(Verdict::Deny, first_deny)
    } else if first_deny.is_some() {
        resolved(Verdict::Deny, first_deny)
    } else if approves.is_empty() {
        Outcome::Pending
    } else {
        let m = voters.len().max(1);
        let all_approved = voters.iter().all(|v| approves.iter().any(|(_, a)| a == v));
        match rule {
            DecisionRule::Settle { settle_ms } => {
                let since = approve_seen.unwrap_or(now);
                let until = since.saturating_add(settle_ms.max(0));
                if m <= 1 || all_approved || now >= until {
                    resolved(Verdict::Approve, Some(approves[0].1))
                } else {
                    Outcome::Settling { since, until }
                }
            }
            DecisionRule::Unanimous if all_approved => {
                resolved(Verdict::Approve, approves.last().map(|(_, d)| *d))
            }
            DecisionRule::Unanimous => Outcome::Pending,
            DecisionRule::NOfM { n } => {
                let needed = (n.max(1) as usize).min(m);
                if approves.len() >= needed {
                    resolved(Verdict::Approve, Some(approves[needed - 1].1))
                } else {
                    Outcome::Pending
                }
            }
        }
    };
    (outcome, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (DeviceId, DeviceKey, DeviceKey, Approval) {
        let desk = DeviceKey::from_secret_bytes([1; 32]).device_id();
        let a = DeviceKey::from_secret_bytes([2; 32]);
        let b = DeviceKey::from_secret_bytes([3; 32]);
        let req = Approval::new(
            "ap1".into(),
            "t1".into(),
            "trash",
            r#"{"path":"/home/u/x"}"#,
            "Move ~/x to the trash",
            Risk::Medium,
            1_000,
            61_000,
            &desk,
        );
        (desk, a, b, req)
    }

    const ONE: DecisionRule = DecisionRule::NOfM { n: 1 };

    fn voters(keys: &[&DeviceKey]) -> Vec<DeviceId> {
        keys.iter().map(|k| k.device_id()).collect()
    }

    fn decide(req: &mut Approval, key: &DeviceKey, desk: &DeviceId, v: Verdict, at: i64) {
        let d = req.sign(key, desk, v, at);
        req.decisions.insert(key.device_id().to_string(), d);
    }

    #[test]
    fn valid_approve_resolves() {
        let (desk, a, _, mut req) = setup();
        assert!(req.hash_matches(&desk));
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        let (out, ignored) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            3_000,
            &voters(&[&a]),
            ONE,
            None,
        );
        assert_eq!(
            out,
            Outcome::Resolved {
                verdict: Verdict::Approve,
                by: Some(a.device_id()),
                counted: vec![a.device_id()],
            }
        );
        assert!(ignored.is_empty());
    }

    #[test]
    fn deny_wins_over_earlier_approve() {
        let (desk, a, b, mut req) = setup();
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        decide(&mut req, &b, &desk, Verdict::Deny, 2_500);
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            3_000,
            &voters(&[&a, &b]),
            ONE,
            None,
        );
        assert_eq!(
            out,
            Outcome::Resolved {
                verdict: Verdict::Deny,
                by: Some(b.device_id()),
                counted: vec![a.device_id(), b.device_id()],
            }
        );
    }

    #[test]
    fn expired_is_deny_even_when_approved() {
        let (desk, a, _, mut req) = setup();
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            61_000,
            &voters(&[&a]),
            ONE,
            None,
        );
        assert_eq!(
            out,
            Outcome::Resolved {
                verdict: Verdict::Deny,
                by: None,
                counted: vec![a.device_id()],
            }
        );
    }

    #[test]
    fn forged_flipped_replayed_and_unknown_are_ignored() {
        let (desk, a, b, mut req) = setup();
        // Verdict flipped after signing.
        let mut d = req.sign(&a, &desk, Verdict::Deny, 2_000);
        d.verdict = Verdict::Approve;
        req.decisions.insert(a.device_id().to_string(), d);
        // B's signature stored under A's key... and a decision for another request replayed.
        let mut other = req.clone();
        other.id = "ap2".into();
        let replayed = other.sign(&b, &desk, Verdict::Approve, 2_000);
        req.decisions.insert(b.device_id().to_string(), replayed);
        // Signed for another desktop.
        let c = DeviceKey::from_secret_bytes([4; 32]);
        let elsewhere = req.sign(&c, &a.device_id(), Verdict::Approve, 2_000);
        req.decisions.insert(c.device_id().to_string(), elsewhere);
        req.decisions.insert(
            "not-a-device".into(),
            Decision {
                verdict: Verdict::Approve,
                at: 1,
                signature: "zz".into(),
            },
        );
        let all = voters(&[&a, &b, &c]);
        let (out, ignored) = resolve(&req, &req.tool, &req.args, &desk, 3_000, &all, ONE, None);
        assert_eq!(out, Outcome::Pending);
        assert_eq!(ignored.len(), 4, "{ignored:?}");
        // A valid signature from an unpaired device does not count either.
        let mut req2 = setup().3;
        decide(&mut req2, &a, &desk, Verdict::Approve, 2_000);
        let (out, ignored) = resolve(&req2, &req2.tool, &req2.args, &desk, 3_000, &[], ONE, None);
        assert_eq!(out, Outcome::Pending);
        assert!(matches!(ignored[0], DecisionError::UnknownDevice(_)));
    }

    #[test]
    fn decision_does_not_cover_different_arguments() {
        let (desk, a, _, mut req) = setup();
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        // The desktop checks against the call it holds, not the document's copy.
        let (out, _) = resolve(
            &req,
            "trash",
            r#"{"path":"/etc"}"#,
            &desk,
            3_000,
            &voters(&[&a]),
            ONE,
            None,
        );
        assert_eq!(out, Outcome::Pending);
    }

    fn verdict_of(out: &Outcome) -> Option<Verdict> {
        match out {
            Outcome::Resolved { verdict, .. } => Some(*verdict),
            _ => None,
        }
    }

    #[test]
    fn settle_lets_a_deny_within_the_window_win_and_acts_after_it() {
        let (desk, a, b, mut req) = setup();
        let both = voters(&[&a, &b]);
        let rule = DecisionRule::Settle { settle_ms: 2_000 };
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        // Two phones: the approve opens the window, it does not act yet.
        let (out, _) = resolve(&req, &req.tool, &req.args, &desk, 3_000, &both, rule, None);
        assert_eq!(
            out,
            Outcome::Settling {
                since: 3_000,
                until: 5_000
            }
        );
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            4_999,
            &both,
            rule,
            Some(3_000),
        );
        assert!(matches!(out, Outcome::Settling { .. }), "{out:?}");
        // A deny inside the window wins, whatever the phones' clocks say (B's is far behind).
        let mut denied = req.clone();
        decide(&mut denied, &b, &desk, Verdict::Deny, -7_200_000);
        let (out, _) = resolve(
            &denied,
            &req.tool,
            &req.args,
            &desk,
            4_000,
            &both,
            rule,
            Some(3_000),
        );
        assert_eq!(verdict_of(&out), Some(Verdict::Deny));
        // Nobody denied: the window closes on the desktop's clock and the approve acts.
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            5_000,
            &both,
            rule,
            Some(3_000),
        );
        assert_eq!(
            out,
            Outcome::Resolved {
                verdict: Verdict::Approve,
                by: Some(a.device_id()),
                counted: vec![a.device_id()],
            }
        );
        // One phone paired, or every phone approved: at once.
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            3_000,
            &voters(&[&a]),
            rule,
            None,
        );
        assert_eq!(verdict_of(&out), Some(Verdict::Approve));
        let mut both_ok = req.clone();
        decide(&mut both_ok, &b, &desk, Verdict::Approve, 2_100);
        let (out, _) = resolve(
            &both_ok, &req.tool, &req.args, &desk, 3_000, &both, rule, None,
        );
        assert_eq!(verdict_of(&out), Some(Verdict::Approve));
    }

    #[test]
    fn unanimous_waits_for_every_paired_phone_and_n_of_m_counts() {
        let (desk, a, b, mut req) = setup();
        let c = DeviceKey::from_secret_bytes([4; 32]);
        let three = voters(&[&a, &b, &c]);
        decide(&mut req, &a, &desk, Verdict::Approve, 2_000);
        decide(&mut req, &b, &desk, Verdict::Approve, 2_001);
        let r = |req: &Approval, rule| {
            resolve(req, &req.tool, &req.args, &desk, 3_000, &three, rule, None).0
        };
        assert_eq!(r(&req, DecisionRule::Unanimous), Outcome::Pending);
        assert_eq!(
            verdict_of(&r(&req, DecisionRule::NOfM { n: 2 })),
            Some(Verdict::Approve)
        );
        assert_eq!(r(&req, DecisionRule::NOfM { n: 3 }), Outcome::Pending);
        // n above the phones paired: all of them.
        let two = voters(&[&a, &b]);
        let (out, _) = resolve(
            &req,
            &req.tool,
            &req.args,
            &desk,
            3_000,
            &two,
            DecisionRule::NOfM { n: 5 },
            None,
        );
        assert_eq!(verdict_of(&out), Some(Verdict::Approve));
        // The third approve completes unanimity and is named.
        let mut all = req.clone();
        decide(&mut all, &c, &desk, Verdict::Approve, 2_002);
        assert_eq!(
            r(&all, DecisionRule::Unanimous),
            Outcome::Resolved {
                verdict: Verdict::Approve,
                by: Some(c.device_id()),
                counted: three.clone(),
            }
        );
        // A deny before the count is reached wins in both rules.
        let mut denied = req.clone();
        decide(&mut denied, &c, &desk, Verdict::Deny, 2_002);
        assert_eq!(
            verdict_of(&r(&denied, DecisionRule::Unanimous)),
            Some(Verdict::Deny)
        );
        assert_eq!(
            verdict_of(&r(&denied, DecisionRule::NOfM { n: 3 })),
            Some(Verdict::Deny)
        );
    }

    #[test]
    fn a_resolution_tells_who_came_too_late() {
        let r = Resolution {
            verdict: Verdict::Approve,
            by: "a".into(),
            at: 1,
            reason: String::new(),
            counted: Some(vec!["a".into()]),
        };
        assert!(r.counted("a"));
        assert!(!r.counted("b"));
        let old = Resolution { counted: None, ..r };
        assert!(
            old.counted("b"),
            "unknown for old resolutions: never claimed late"
        );
    }
}
