//! Route policy: `compile(routes)` once at start, then `decide(principal,
//! request)` per request — no IO, no allocation. Only this module can make
//! a [`Permitted`], and `upstream::forward` requires one: nothing reaches
//! the upstream unless the policy ran and allowed it.

use crate::config::Route;
use crate::model::{Principal, Role};
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

#[derive(Debug)]
pub enum Decision {
    /// Forward (with identity if there is a principal).
    Allow(Permitted),
    /// Nobody is signed in: sign in first.
    Login { reason: &'static str },
    /// Signed in, but the last tap is older than the route allows.
    StepUp { max_age: Duration, rule: usize },
    /// Signed in and not allowed.
    Deny {
        reason: &'static str,
        rule: Option<usize>,
    },
}

struct Compiled {
    prefix: String,
    /// `prefix` without its trailing '/', which matches exactly too.
    exact: String,
    allow_roles: Vec<Role>,
    public: bool,
    max_auth_age: Option<Duration>,
}

pub struct Policy {
    rules: Vec<Compiled>,
}

impl Policy {
    pub fn compile(routes: &[Route]) -> Policy {
        let rules = routes
            .iter()
            .map(|r| Compiled {
                prefix: r.path.clone(),
                exact: r.path.trim_end_matches('/').to_owned(),
                allow_roles: r.allow_roles.clone(),
                public: r.public,
                max_auth_age: r.max_auth_age,
            })
            .collect();
        Policy { rules }
    }

    /// Decide for a path (already normalised by the gate) at `now`.
    pub fn decide(&self, principal: Option<&Principal>, path: &str, now: u64) -> Decision {
        if self.rules.is_empty() {
            // No rules configured: every signed-in user may pass.
            return match principal {
                Some(_) => Decision::Allow(Permitted {
                    rule: None,
                    _private: (),
                }),
                None => Decision::Login {
                    reason: "user-unauthenticated",
                },
            };
        }
        let Some((i, rule)) = self.rules.iter().enumerate().find(|(_, r)| r.matches(path)) else {
            return match principal {
                Some(_) => Decision::Deny {
                    reason: "no-route-matched",
                    rule: None,
                },
                None => Decision::Login {
                    reason: "user-unauthenticated",
                },
            };
        };
        if rule.public {
            return Decision::Allow(Permitted {
                rule: Some(i),
                _private: (),
            });
        }
        let Some(p) = principal else {
            return Decision::Login {
                reason: "user-unauthenticated",
            };
        };
        if !rule.allow_roles.iter().any(|r| p.has_role(r)) {
            return Decision::Deny {
                reason: "route-role-missing",
                rule: Some(i),
            };
        }
        if let Some(max_age) = rule.max_auth_age
            && now.saturating_sub(p.auth_time) > max_age.as_secs()
        {
            return Decision::StepUp { max_age, rule: i };
        }
        Decision::Allow(Permitted {
            rule: Some(i),
            _private: (),
        })
    }

    pub fn route_path(&self, rule: usize) -> Option<&str> {
        self.rules.get(rule).map(|r| r.prefix.as_str())
    }
}

impl Compiled {
    /// Segment-aware prefix: `/admin/` and `/admin` both match `/admin`,
    /// `/admin/x`, never `/administrator`.
    fn matches(&self, path: &str) -> bool {
        if self.exact.is_empty() {
            return true; // "/" matches everything
        }
        path == self.exact
            || path
                .strip_prefix(self.exact.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthnFacts, Email, Subject};

    fn route(path: &str, roles: &[&str], public: bool, max_age: Option<u64>) -> Route {
        Route {
            path: path.into(),
            allow_roles: roles.iter().map(|r| Role::parse(r).unwrap()).collect(),
            public,
            max_auth_age: max_age.map(Duration::from_secs),
        }
    }

    fn user(roles: &[&str], auth_time: u64) -> Principal {
        Principal {
            subject: Subject("u".into()),
            email: Email::parse("u@example.com").unwrap(),
            roles: roles.iter().map(|r| Role::parse(r).unwrap()).collect(),
            auth_time,
            cred: String::new(),
            authn: AuthnFacts::default(),
        }
    }

    fn verdict(d: Decision) -> String {
        match d {
            Decision::Allow(p) => format!("allow:{:?}", p.rule()),
            Decision::Login { reason } => format!("login:{reason}"),
            Decision::StepUp { rule, .. } => format!("step-up:{rule}"),
            Decision::Deny { reason, rule } => format!("deny:{reason}:{rule:?}"),
        }
    }

    #[test]
    fn table() {
        let policy = Policy::compile(&[
            route("/healthz", &[], true, None),
            route("/admin/", &["admin"], false, Some(300)),
            route("/app", &["member", "admin"], false, None),
        ]);
        let member = user(&["member"], 1_000);
        let admin = user(&["admin"], 1_000);
        let cases: &[(Option<&Principal>, &str, u64, &str)] = &[
            (None, "/healthz", 1_000, "allow:Some(0)"),
            (None, "/healthz/deep", 1_000, "allow:Some(0)"),
            (None, "/healthzz", 1_000, "login:user-unauthenticated"),
            (None, "/admin/x", 1_000, "login:user-unauthenticated"),
            (
                Some(&member),
                "/admin/x",
                1_000,
                "deny:route-role-missing:Some(1)",
            ),
            (
                Some(&member),
                "/admin",
                1_000,
                "deny:route-role-missing:Some(1)",
            ),
            (Some(&admin), "/admin/x", 1_200, "allow:Some(1)"),
            (Some(&admin), "/admin/x", 1_301, "step-up:1"),
            (Some(&member), "/app/x", 9_999, "allow:Some(2)"),
            (
                Some(&member),
                "/application",
                9_999,
                "deny:no-route-matched:None",
            ),
            (Some(&member), "/other", 1_000, "deny:no-route-matched:None"),
        ];
        for (p, path, now, want) in cases {
            assert_eq!(
                verdict(policy.decide(*p, path, *now)),
                *want,
                "{path} at {now}"
            );
        }
    }

    #[test]
    fn no_rules_means_any_signed_in_user() {
        let policy = Policy::compile(&[]);
        assert_eq!(
            verdict(policy.decide(None, "/", 0)),
            "login:user-unauthenticated"
        );
        assert_eq!(
            verdict(policy.decide(Some(&user(&[], 0)), "/x", 0)),
            "allow:None"
        );
    }

    #[test]
    fn first_match_wins() {
        let policy = Policy::compile(&[
            route("/", &["member"], false, None),
            route("/admin", &["admin"], false, None),
        ]);
        assert_eq!(
            verdict(policy.decide(Some(&user(&["member"], 0)), "/admin", 0)),
            "allow:Some(0)"
        );
    }
}
