//! `tapgate explain`: what would the policy decide for this person and this
//! request, and which rule decides it — from the configuration alone (plus
//! the store, to look up a user's roles), without a running server.

use crate::config::{Config, Mode};
use crate::model::{AuthnFacts, Email, Principal, Role, Subject};
use crate::policy::{Decision, Request};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExplainArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The user's email. Their roles come from the store unless --role is given.
    #[arg(long)]
    user: Option<String>,
    /// Roles to assume (repeat for several); skips the store lookup.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// HTTP method of the request.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (with or without a query string).
    #[arg(long, default_value = "/")]
    path: String,
    /// Host name the request is sent to (default: the public URL's host).
    #[arg(long)]
    host: Option<String>,
    /// How long ago the user last tapped their key.
    #[arg(long, default_value = "1m")]
    auth_age: String,
    /// What kind of key the user tapped.
    #[arg(long, value_enum, default_value_t = KeyKind::Device)]
    key: KeyKind,
    /// AAGUID of the key (with --key hardware).
    #[arg(long)]
    aaguid: Option<String>,
    /// The key did not verify the user (no PIN/biometric).
    #[arg(long)]
    no_uv: bool,
    /// How many active keys the user has (for `min_keys` rules).
    #[arg(long, default_value_t = 2)]
    keys: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    /// A synced passkey (backup-eligible).
    Synced,
    /// A device-bound key without a trusted attestation.
    Device,
    /// A device-bound key whose attestation chains to a trusted root.
    Hardware,
}

/// 0: allowed; 3: sign-in, step-up or denial; 1/2: errors.
pub async fn run(a: ExplainArgs) -> ExitCode {
    // Only the policy matters here: keys and other production-only values
    // may be absent on the operator's machine, so fill them like the demo.
    let config = match Config::load(Mode::Demo, a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            super::report(&e);
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let policy = crate::server::policy_of(&config);
    let method = match http::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return usage(&format!("--method: {:?} is not an HTTP method", a.method)),
    };
    let path = a.path.split('?').next().unwrap_or("/").to_owned();
    if let Err(e) = crate::gate::normalised_path(&path) {
        return usage(&format!("--path: {}", e.message));
    }
    let Ok(age) = humantime::parse_duration(&a.auth_age) else {
        return usage(&format!(
            "--auth-age: {:?} is not a duration like 30s or 10m",
            a.auth_age
        ));
    };
    let host = a.host.clone().unwrap_or_else(|| config.public_host.clone());

    let principal = match &a.user {
        None => None,
        Some(email) => {
            let email = match Email::parse(email) {
                Ok(e) => e,
                Err(m) => return usage(&format!("--user: {m}")),
            };
            let roles = if a.roles.is_empty() {
                match roles_from_store(&config, &email).await {
                    Ok(r) => r,
                    Err(m) => {
                        eprintln!("error: {m}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                match a
                    .roles
                    .iter()
                    .map(|r| Role::parse(r))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(r) => r,
                    Err(m) => return usage(&format!("--role: {m}")),
                }
            };
            let (synced, root) = match a.key {
                KeyKind::Synced => (true, None),
                KeyKind::Device => (false, None),
                KeyKind::Hardware => (
                    false,
                    policy
                        .trust()
                        .roots
                        .first()
                        .cloned()
                        .or(Some("(trusted root)".into())),
                ),
            };
            let now = crate::server::now_unix();
            Some(Principal {
                subject: Subject("u_explain".into()),
                email,
                roles,
                auth_time: now.saturating_sub(age.as_secs()),
                cred: String::new(),
                authn: AuthnFacts {
                    uv: !a.no_uv,
                    synced,
                    attested: root.is_some(),
                    aaguid: a
                        .aaguid
                        .clone()
                        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into()),
                    root,
                },
                keys: a.keys,
            })
        }
    };
    // With --key hardware the root is assumed trusted even if none is
    // loaded, so the answer is about the rule, not about the trust store.
    let mut policy = policy;
    if matches!(a.key, KeyKind::Hardware) && policy.trust().roots.is_empty() {
        policy = crate::policy::Policy::new(
            policy.rules().to_vec(),
            crate::policy::Trust {
                roots: vec!["(trusted root)".into()],
                ..policy.trust().clone()
            },
        );
    }
    let now = crate::server::now_unix();
    let decision = policy.decide(
        principal.as_ref(),
        &Request {
            host: &host,
            method: &method,
            path: &path,
        },
        now,
    );

    let verdict = match &decision {
        Decision::Allow(_) => "ALLOW",
        Decision::Login { .. } => "SIGN-IN REQUIRED",
        Decision::StepUp { .. } => "STEP-UP REQUIRED",
        Decision::Deny { .. } => "DENY",
    };
    println!("decision: {verdict} ({})", decision.reason());
    match decision.rule() {
        Some(i) => {
            let rule = &policy.rules()[i];
            println!("rule:     route[{i}]: {}", rule.describe());
            println!("          admits {}", admits(rule));
            if rule.min_keys > 0 {
                println!("          needs {} registered keys", rule.min_keys);
            }
            if let Some(m) = rule.max_auth_age {
                println!(
                    "          needs a tap within {}",
                    humantime::format_duration(m)
                );
            }
            let s = rule.strength;
            if s.hardware || s.deny_synced || s.require_uv {
                let mut needs = Vec::new();
                if s.hardware {
                    needs.push("an attested hardware key");
                }
                if s.deny_synced {
                    needs.push("a device-bound (not synced) key");
                }
                if s.require_uv {
                    needs.push("user verification");
                }
                println!("          needs {}", needs.join(", "));
            }
        }
        None if policy.rules().is_empty() => {
            println!("rule:     (no routes configured: any signed-in user)")
        }
        None => println!("rule:     (no route matched: denied by default)"),
    }
    match &principal {
        Some(p) => println!(
            "user:     {} (roles: {})",
            p.email,
            if p.roles.is_empty() {
                "none".into()
            } else {
                p.roles_csv()
            }
        ),
        None => println!("user:     (anonymous)"),
    }
    println!("request:  {method} {host}{path}");
    if !matches!(decision, Decision::Allow(_) | Decision::Login { .. }) {
        let max_age = match &decision {
            Decision::StepUp { max_age, .. } => *max_age,
            _ => None,
        };
        println!(
            "message:  {}",
            crate::gate::reason_message(decision.reason(), &policy, max_age)
        );
    }
    if matches!(decision, Decision::Allow(_)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn admits(rule: &crate::policy::Rule) -> String {
    let a = &rule.allow;
    if a.public {
        return "everyone (public)".into();
    }
    let mut parts = Vec::new();
    if a.any_user {
        parts.push("any signed-in user".to_owned());
    }
    if !a.roles.is_empty() {
        parts.push(format!(
            "roles {}",
            a.roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !a.emails.is_empty() {
        parts.push(format!(
            "users {}",
            a.emails
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !a.domains.is_empty() {
        parts.push(format!("emails @{}", a.domains.join(", @")));
    }
    parts.join("; ")
}

async fn roles_from_store(config: &Config, email: &Email) -> Result<Vec<Role>, String> {
    let store = crate::store::open_config(config)
        .await
        .map_err(|e| format!("cannot open the store to look up {email}: {e} (or pass --role)"))?;
    match store.user_by_email(email).await {
        Ok(Some(u)) => Ok(u.roles),
        Ok(None) => Err(format!(
            "{email} is not a registered user (pass --role to assume roles)"
        )),
        Err(e) => Err(format!("store lookup failed: {e}")),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(super::EXIT_CONFIG)
}
