//! Route policy. `Policy::new(rules, trust)` once at start (and on reload);
//! `decide(principal, request, now)` per request — no IO, no allocation.
//! Only this module can make a [`Permitted`], and `upstream::forward`
//! requires one: nothing reaches the upstream unless the policy ran and
//! allowed it. Reason codes are stable: logs, audit, deny pages and the
//! `explain` command share them.

pub mod matcher;

pub use matcher::{HostPattern, Methods, PathPattern};

use crate::model::{Email, Principal, Role};
use std::time::Duration;

/// Proof that the policy allowed a request. Private field: only `decide`
/// constructs it.
#[derive(Debug)]
pub struct Permitted {
    rule: Option<usize>,
    _private: (),
}

impl Permitted {
    /// The index of the rule that allowed it (`None`: the default policy).
    pub fn rule(&self) -> Option<usize> {
        self.rule
    }
}

/// What the request is, as far as the policy cares.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Host name without port.
    pub host: &'a str,
    pub method: &'a http::Method,
    /// Already normalised by the gate (no dot segments).
    pub path: &'a str,
}

#[derive(Debug)]
pub enum Decision {
    /// Forward (with identity if there is a principal).
    Allow(Permitted),
    /// Nobody is signed in: sign in first.
    Login {
        reason: &'static str,
        rule: Option<usize>,
    },
    /// Signed in, but the route needs a fresher or stronger tap.
    StepUp {
        reason: &'static str,
        max_age: Option<Duration>,
        acr: Option<&'static str>,
        rule: usize,
    },
    /// Signed in and not allowed.
    Deny {
        reason: &'static str,
        rule: Option<usize>,
    },
}

impl Decision {
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allowed",
            Decision::Login { reason, .. }
            | Decision::StepUp { reason, .. }
            | Decision::Deny { reason, .. } => reason,
        }
    }
    pub fn rule(&self) -> Option<usize> {
        match self {
            Decision::Allow(p) => p.rule,
            Decision::Login { rule, .. } | Decision::Deny { rule, .. } => *rule,
            Decision::StepUp { rule, .. } => Some(*rule),
        }
    }
}

/// Who a rule admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    pub public: bool,
    pub any_user: bool,
    pub roles: Vec<Role>,
    pub emails: Vec<Email>,
    /// Lower-case domains, matched against the email's domain exactly.
    pub domains: Vec<String>,
}

/// What the last tap must have proven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strength {
    /// Attested hardware: see [`Trust`].
    pub hardware: bool,
    pub deny_synced: bool,
    pub require_uv: bool,
}

impl Strength {
    fn or(self, other: Strength) -> Strength {
        Strength {
            hardware: self.hardware || other.hardware,
            deny_synced: self.deny_synced || other.deny_synced,
            require_uv: self.require_uv || other.require_uv,
        }
    }
}

/// One `[[route]]`, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    pub methods: Methods,
    pub allow: Allow,
    pub max_auth_age: Option<Duration>,
    pub strength: Strength,
    /// Active keys the user must have (0: no requirement).
    pub min_keys: u32,
}

impl Rule {
    fn matches(&self, req: &Request) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(req.host))
            && self.methods.contains(req.method)
            && self.path.matches(req.path)
    }

    fn admits(&self, p: &Principal) -> bool {
        let a = &self.allow;
        a.any_user
            || a.roles.iter().any(|r| p.has_role(r))
            || a.emails.contains(&p.email)
            || a.domains.iter().any(|d| p.email.domain() == d)
    }

    /// A one-line description for explain output and audit events.
    pub fn describe(&self) -> String {
        let mut s = format!("path {}", self.path);
        if let Some(h) = &self.host {
            s.push_str(&format!(" on {h}"));
        }
        if self.methods != Methods::ALL {
            s.push_str(&format!(" for {}", self.methods));
        }
        s
    }

    /// Does every request this rule matches also match `other`?
    fn within(&self, other: &Rule) -> bool {
        let host = match (&self.host, &other.host) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a.within(b),
        };
        host && self.methods.within(other.methods) && self.path.within(&other.path)
    }
}

/// Which credentials count as hardware. An AAGUID alone proves nothing (a
/// software authenticator can claim any): a credential is hardware when its
/// attestation chained to one of `roots` at registration and, if
/// `aaguids` is not empty, its attested AAGUID is listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// SHA-256 fingerprints (hex) of the trusted attestation roots.
    pub roots: Vec<String>,
    /// Allowed AAGUIDs (hyphenated lower-case hex); empty: any attested.
    pub aaguids: Vec<String>,
    /// Floor for every non-public route and every registration.
    pub global: Strength,
}

impl Trust {
    pub fn is_hardware(&self, p: &Principal) -> bool {
        p.authn
            .root
            .as_ref()
            .is_some_and(|r| self.roots.contains(r))
            && (self.aaguids.is_empty() || self.aaguids.contains(&p.authn.aaguid))
    }
}

pub struct Policy {
    rules: Vec<Rule>,
    trust: Trust,
}

/// A just-made tap that still falls short is not asked again (that would
/// loop): it is denied.
const FRESH_TAP_SECS: u64 = 30;

impl Policy {
    pub fn new(rules: Vec<Rule>, trust: Trust) -> Policy {
        Policy { rules, trust }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Does any rule (or the global floor) need attested hardware keys?
    /// Then registrations ask for the attestation statement.
    pub fn wants_attestation(&self) -> bool {
        self.trust.global.hardware || self.rules.iter().any(|r| r.strength.hardware)
    }

    /// Pairs `(shadowed, by)`: rule `shadowed` can never decide because the
    /// earlier rule `by` matches every request it does.
    pub fn shadowed(rules: &[Rule]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in rules.iter().enumerate() {
            if let Some(i) = rules[..j].iter().position(|earlier| later.within(earlier)) {
                out.push((j, i));
            }
        }
        out
    }

    pub fn decide(&self, principal: Option<&Principal>, req: &Request, now: u64) -> Decision {
        let (index, rule) = if self.rules.is_empty() {
            // No rules configured: every signed-in user may pass.
            (None, None)
        } else {
            match self.rules.iter().enumerate().find(|(_, r)| r.matches(req)) {
                Some((i, r)) => (Some(i), Some(r)),
                None => {
                    return match principal {
                        Some(_) => Decision::Deny {
                            reason: "no-route-matched",
                            rule: None,
                        },
                        None => Decision::Login {
                            reason: "user-unauthenticated",
                            rule: None,
                        },
                    };
                }
            }
        };
        if rule.is_some_and(|r| r.allow.public) {
            return Decision::Allow(Permitted {
                rule: index,
                _private: (),
            });
        }
        let Some(p) = principal else {
            return Decision::Login {
                reason: "user-unauthenticated",
                rule: index,
            };
        };
        let Some(rule) = rule else {
            return self.check_strength(p, self.trust.global, None, None, now);
        };
        let i = index.unwrap_or_default();
        if !rule.admits(p) {
            let reason = if rule.allow.emails.is_empty() && rule.allow.domains.is_empty() {
                "route-role-missing"
            } else {
                "route-user-not-allowed"
            };
            return Decision::Deny {
                reason,
                rule: Some(i),
            };
        }
        if p.keys < rule.min_keys {
            // Only the person can fix this (register a backup key), so no
            // step-up: a denial that says what to do.
            return Decision::Deny {
                reason: "backup-key-required",
                rule: Some(i),
            };
        }
        self.check_strength(
            p,
            rule.strength.or(self.trust.global),
            rule.max_auth_age,
            Some(i),
            now,
        )
    }

    fn check_strength(
        &self,
        p: &Principal,
        s: Strength,
        max_age: Option<Duration>,
        rule: Option<usize>,
        now: u64,
    ) -> Decision {
        let age = now.saturating_sub(p.auth_time);
        let weak = if s.hardware && !self.trust.is_hardware(p) {
            Some(("credential-not-hardware", "hwk"))
        } else if s.deny_synced && p.authn.synced {
            Some(("credential-synced", "hwk"))
        } else if s.require_uv && !p.authn.uv {
            Some(("user-verification-missing", "mfa"))
        } else {
            None
        };
        if let Some((reason, acr)) = weak {
            return match rule {
                // Asking again right after a tap would loop: this key
                // cannot do it, so say so.
                Some(r) if age > FRESH_TAP_SECS => Decision::StepUp {
                    reason,
                    max_age: None,
                    acr: Some(acr),
                    rule: r,
                },
                _ => Decision::Deny { reason, rule },
            };
        }
        if let (Some(max_age), Some(r)) = (max_age, rule)
            && age > max_age.as_secs()
        {
            return Decision::StepUp {
                reason: "auth-too-old",
                max_age: Some(max_age),
                acr: None,
                rule: r,
            };
        }
        Decision::Allow(Permitted { rule, _private: () })
    }
}

#[cfg(test)]
mod tests;
