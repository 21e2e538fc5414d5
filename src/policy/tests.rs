//! Data-driven policy tests: policy text + principal + request → verdict
//! and reason, in the spirit of a spec table.

use super::*;
use crate::config::{Config, Mode};
use crate::model::{AuthnFacts, Subject};

const POLICY: &str = r#"
roles = ["admin", "member", "deployer"]

[trust]
allowed_aaguids = ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]

[[route]]
path = "/healthz"
public = true

[[route]]
path = "/admin/"
allow_roles = ["admin"]
max_auth_age = "5m"

[[route]]
path = "/deploy/**"
methods = ["POST"]
allow_roles = ["deployer"]
credentials = "hardware"
max_auth_age = "5m"

[[route]]
host = "*.internal.example.com"
path = "/"
allow_domains = ["example.com"]

[[route]]
path = "/partners/*/report"
allow_emails = ["pat@partner.example"]
require_uv = true

[[route]]
path = "/"
methods = ["GET"]
allow_roles = ["member", "admin", "deployer"]
"#;

fn policy() -> Policy {
    let c = Config::from_sources(Mode::Demo, Some(POLICY), &[]).unwrap();
    let mut p = crate::server::policy_of(&c);
    // The test root: what a credential attested at registration chains to.
    p.trust.roots.push("root-fp".into());
    p
}

struct Who {
    email: &'static str,
    roles: &'static [&'static str],
    age: u64,
    uv: bool,
    synced: bool,
    root: Option<&'static str>,
    aaguid: &'static str,
}

const NOW: u64 = 1_000_000;
const YUBIKEY: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";

fn member(email: &'static str, roles: &'static [&'static str]) -> Who {
    Who {
        email,
        roles,
        age: 60,
        uv: true,
        synced: true,
        root: None,
        aaguid: "00000000-0000-0000-0000-000000000000",
    }
}

fn principal(w: &Who) -> Principal {
    Principal {
        subject: Subject("u".into()),
        email: Email::parse(w.email).unwrap(),
        roles: w.roles.iter().map(|r| Role::parse(r).unwrap()).collect(),
        auth_time: NOW - w.age,
        cred: String::new(),
        authn: AuthnFacts {
            uv: w.uv,
            synced: w.synced,
            attested: w.root.is_some(),
            aaguid: w.aaguid.into(),
            root: w.root.map(str::to_owned),
        },
        keys: 0,
    }
}

fn verdict(d: &Decision) -> String {
    let kind = match d {
        Decision::Allow(_) => "allow",
        Decision::Login { .. } => "login",
        Decision::StepUp { .. } => "step-up",
        Decision::Deny { .. } => "deny",
    };
    match d.rule() {
        Some(r) => format!("{kind} {} #{r}", d.reason()),
        None => format!("{kind} {}", d.reason()),
    }
}

#[test]
fn decision_table() {
    let policy = policy();
    let ann = member("ann@example.com", &["member"]);
    let root = member("root@example.com", &["admin"]);
    let stale_root = Who {
        age: 301,
        ..member("root@example.com", &["admin"])
    };
    let dev_soft = Who {
        age: 600,
        ..member("dev@example.com", &["deployer"])
    };
    let dev_soft_fresh = Who {
        age: 5,
        ..member("dev@example.com", &["deployer"])
    };
    let dev_hw = Who {
        synced: false,
        root: Some("root-fp"),
        aaguid: YUBIKEY,
        ..member("dev@example.com", &["deployer"])
    };
    let dev_other_key = Who {
        synced: false,
        root: Some("root-fp"),
        aaguid: "11111111-1111-1111-1111-111111111111",
        age: 600,
        ..member("dev@example.com", &["deployer"])
    };
    let dev_untrusted = Who {
        synced: false,
        root: Some("other-root"),
        aaguid: YUBIKEY,
        age: 600,
        ..member("dev@example.com", &["deployer"])
    };
    let dev_hw_old = Who { age: 400, ..dev_hw };
    let pat = member("pat@partner.example", &[]);
    let pat_no_uv = Who {
        uv: false,
        age: 600,
        ..member("pat@partner.example", &[])
    };
    let outsider = member("eve@evil.example", &["member"]);

    let cases: &[(Option<&Who>, &str, &str, &str, &str)] = &[
        // who, host, method, path → verdict
        (
            None,
            "app.example.com",
            "GET",
            "/healthz",
            "allow allowed #0",
        ),
        (
            None,
            "app.example.com",
            "GET",
            "/healthz/db",
            "allow allowed #0",
        ),
        (
            None,
            "app.example.com",
            "GET",
            "/healthzz",
            "login user-unauthenticated #5",
        ),
        (
            None,
            "app.example.com",
            "GET",
            "/admin/x",
            "login user-unauthenticated #1",
        ),
        (
            None,
            "app.example.com",
            "DELETE",
            "/x",
            "login user-unauthenticated",
        ),
        (
            Some(&ann),
            "app.example.com",
            "GET",
            "/admin/x",
            "deny route-role-missing #1",
        ),
        (
            Some(&ann),
            "app.example.com",
            "GET",
            "/admin",
            "deny route-role-missing #1",
        ),
        (
            Some(&ann),
            "app.example.com",
            "GET",
            "/administrator",
            "allow allowed #5",
        ),
        (
            Some(&ann),
            "app.example.com",
            "HEAD",
            "/docs",
            "allow allowed #5",
        ),
        (
            Some(&ann),
            "app.example.com",
            "POST",
            "/docs",
            "deny no-route-matched",
        ),
        (
            Some(&root),
            "app.example.com",
            "POST",
            "/admin/users",
            "allow allowed #1",
        ),
        (
            Some(&stale_root),
            "app.example.com",
            "GET",
            "/admin/users",
            "step-up auth-too-old #1",
        ),
        (
            Some(&dev_soft),
            "app.example.com",
            "POST",
            "/deploy/prod",
            "step-up credential-not-hardware #2",
        ),
        (
            Some(&dev_soft_fresh),
            "app.example.com",
            "POST",
            "/deploy/prod",
            "deny credential-not-hardware #2",
        ),
        (
            Some(&dev_hw),
            "app.example.com",
            "POST",
            "/deploy/prod/now",
            "allow allowed #2",
        ),
        (
            Some(&dev_hw_old),
            "app.example.com",
            "POST",
            "/deploy/prod",
            "step-up auth-too-old #2",
        ),
        (
            Some(&dev_other_key),
            "app.example.com",
            "POST",
            "/deploy/prod",
            "step-up credential-not-hardware #2",
        ),
        (
            Some(&dev_untrusted),
            "app.example.com",
            "POST",
            "/deploy/prod",
            "step-up credential-not-hardware #2",
        ),
        (
            Some(&dev_hw),
            "app.example.com",
            "GET",
            "/deploy/prod",
            "allow allowed #5",
        ),
        (
            Some(&ann),
            "ci.internal.example.com",
            "POST",
            "/anything",
            "allow allowed #3",
        ),
        (
            Some(&outsider),
            "ci.internal.example.com",
            "GET",
            "/x",
            "deny route-user-not-allowed #3",
        ),
        (
            Some(&pat),
            "app.example.com",
            "POST",
            "/partners/acme/report",
            "allow allowed #4",
        ),
        (
            Some(&pat_no_uv),
            "app.example.com",
            "POST",
            "/partners/acme/report",
            "step-up user-verification-missing #4",
        ),
        (
            Some(&ann),
            "app.example.com",
            "POST",
            "/partners/acme/report",
            "deny route-user-not-allowed #4",
        ),
        (
            Some(&pat),
            "app.example.com",
            "GET",
            "/partners/acme/x/report",
            "deny route-role-missing #5",
        ),
    ];
    let mut failures = Vec::new();
    for (who, host, method, path, want) in cases {
        let p = who.map(principal);
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let got = verdict(&policy.decide(
            p.as_ref(),
            &Request {
                host,
                method: &method,
                path,
            },
            NOW,
        ));
        if got != *want {
            failures.push(format!(
                "{} {method} {host}{path}: want {want:?}, got {got:?}",
                who.map_or("anonymous", |w| w.email)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn removing_a_model_from_the_allow_list_takes_effect_for_existing_sessions() {
    let mut policy = policy();
    let dev = principal(&Who {
        synced: false,
        root: Some("root-fp"),
        aaguid: YUBIKEY,
        ..member("dev@example.com", &["deployer"])
    });
    let req = Request {
        host: "h",
        method: &http::Method::POST,
        path: "/deploy/x",
    };
    assert!(matches!(
        policy.decide(Some(&dev), &req, NOW),
        Decision::Allow(_)
    ));
    policy.trust.aaguids = vec!["11111111-1111-1111-1111-111111111111".into()];
    assert!(matches!(
        policy.decide(Some(&dev), &req, NOW),
        Decision::StepUp {
            reason: "credential-not-hardware",
            ..
        }
    ));
    policy.trust.aaguids.clear();
    policy.trust.roots.clear();
    assert!(matches!(
        policy.decide(Some(&dev), &req, NOW),
        Decision::StepUp {
            reason: "credential-not-hardware",
            ..
        }
    ));
}

#[test]
fn min_keys_asks_for_a_backup_key_first() {
    let c = Config::from_sources(
        Mode::Demo,
        Some("[[route]]\npath = \"/prod/\"\nallow_any_user = true\nmin_keys = 2\n[[route]]\npath = \"/\"\nallow_any_user = true\n"),
        &[],
    )
    .unwrap();
    let policy = crate::server::policy_of(&c);
    let req = Request {
        host: "h",
        method: &http::Method::GET,
        path: "/prod/x",
    };
    let mut p = principal(&member("a@example.com", &[]));
    p.keys = 1;
    assert_eq!(
        verdict(&policy.decide(Some(&p), &req, NOW)),
        "deny backup-key-required #0"
    );
    p.keys = 2;
    assert_eq!(
        verdict(&policy.decide(Some(&p), &req, NOW)),
        "allow allowed #0"
    );
    let other = Request {
        path: "/docs",
        ..req
    };
    p.keys = 1;
    assert_eq!(
        verdict(&policy.decide(Some(&p), &other, NOW)),
        "allow allowed #1"
    );
    assert!(
        problems("[[route]]\npath = \"/\"\nallow_any_user = true\nmin_keys = 0\n")
            .iter()
            .any(|p| p.starts_with("route[0].min_keys"))
    );
}

#[test]
fn no_rules_means_any_signed_in_user() {
    let policy = Policy::new(Vec::new(), Trust::default());
    let req = Request {
        host: "h",
        method: &http::Method::GET,
        path: "/",
    };
    assert!(matches!(
        policy.decide(None, &req, NOW),
        Decision::Login { .. }
    ));
    assert!(matches!(
        policy.decide(Some(&principal(&member("a@example.com", &[]))), &req, NOW),
        Decision::Allow(_)
    ));
}

#[test]
fn global_floor_applies_to_every_route() {
    let c = Config::from_sources(
        Mode::Demo,
        Some("[trust]\nallow_synced = false\n[[route]]\npath = \"/\"\nallow_any_user = true\n"),
        &[],
    )
    .unwrap();
    let policy = crate::server::policy_of(&c);
    let req = Request {
        host: "h",
        method: &http::Method::GET,
        path: "/",
    };
    let synced = principal(&Who {
        age: 600,
        ..member("a@example.com", &[])
    });
    assert!(matches!(
        policy.decide(Some(&synced), &req, NOW),
        Decision::StepUp {
            reason: "credential-synced",
            ..
        }
    ));
    let bound = principal(&Who {
        synced: false,
        ..member("a@example.com", &[])
    });
    assert!(matches!(
        policy.decide(Some(&bound), &req, NOW),
        Decision::Allow(_)
    ));
}

fn problems(toml: &str) -> Vec<String> {
    match Config::from_sources(Mode::Demo, Some(toml), &[]) {
        Ok(_) => vec![],
        Err(crate::config::ConfigError::Invalid(ps)) => ps
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn check_finds_shadowed_rules() {
    let cases = [
        ("/", "/admin", true),
        ("/admin", "/admin/deploy", true),
        ("/admin/", "/admin", true),
        ("/**", "/x", true),
        ("/admin", "/admin/*/x", true),
        ("/admin/deploy", "/admin", false),
        ("/api/*", "/api/x", false),
    ];
    for (first, second, shadowed) in cases {
        let toml = format!(
            "[[route]]\npath = \"{first}\"\nallow_any_user = true\n[[route]]\npath = \"{second}\"\nallow_any_user = true\n"
        );
        let ps = problems(&toml);
        assert_eq!(
            ps.iter().any(|p| p.starts_with("route[1]: unreachable")),
            shadowed,
            "{first} then {second}: {ps:?}"
        );
    }
    // Narrower host or methods on the first rule: the second stays reachable.
    assert!(problems("[[route]]\npath = \"/\"\nmethods = [\"GET\"]\nallow_any_user = true\n[[route]]\npath = \"/x\"\nallow_any_user = true\n").is_empty());
    assert!(problems("[[route]]\nhost = \"a.example.com\"\npath = \"/\"\nallow_any_user = true\n[[route]]\npath = \"/x\"\nallow_any_user = true\n").is_empty());
    // A wider host on the first rule shadows a narrower one.
    assert!(!problems("[[route]]\nhost = \"*.example.com\"\npath = \"/\"\nallow_any_user = true\n[[route]]\nhost = \"a.example.com\"\npath = \"/x\"\nallow_any_user = true\n").is_empty());
}

#[test]
fn check_names_each_bad_key() {
    let ps = problems(
        r#"
roles = ["admin"]
[[route]]
path = "/a"
allow_roles = ["admn"]
[[route]]
path = "/b/**x"
allow_any_user = true
[[route]]
host = "https://x"
path = "/c"
methods = ["FETCH"]
max_auth_age = "soon"
credentials = "titanium"
allow_any_user = true
[[route]]
path = "/d"
[[route]]
path = "/e"
public = true
max_auth_age = "5m"
"#,
    );
    let keys: Vec<&str> = ps.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "route[0].allow_roles",
            "route[1].path",
            "route[2].host",
            "route[2].methods",
            "route[2].max_auth_age",
            "route[2].credentials",
            "route[3].allow_roles",
            "route[4].public",
        ],
        "{ps:#?}"
    );
}
