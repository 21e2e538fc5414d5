//! `tapgate admin …`: act on the configured store directly (SQLite file or
//! PostgreSQL, through the `Store` trait), as the operator. The actions are
//! `crate::admin`'s, shared with the admin page; each is audited with the
//! actor `cli` (JSON lines on stderr, since stdout is the answer).
//!
//! Output: text for people by default, `--json` for scripts (stdout only).
//! Exit codes: 0 done, 1 failed (unknown user, key or invite; store
//! unreachable), 2 bad usage or configuration.

use crate::admin::{Actor, Admin, InviteLookup, find_invite, find_key, invite_json, user_json};
use crate::config::Config;
use crate::model::{Email, Role};
use crate::store::{CredentialRecord, DynStore, StoreError, UserKeys};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct AdminArgs {
    /// Configuration file; without it, the demo's defaults (./tapgate-data/).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print JSON on stdout, for scripts, instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List, show, disable and enable users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// List a user's keys; revoke one.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create, list and cancel invites (new users, or recovery of a user who
    /// lost their keys).
    Invites {
        #[command(subcommand)]
        command: InvitesCommand,
    },
    /// Grant or revoke a role.
    Roles {
        #[command(subcommand)]
        command: RolesCommand,
    },
    /// End sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Same as `invites create`: create a single-use invite and print its URL
    /// alone on one line.
    Invite(InviteCreate),
    /// Print the whole state (users, keys, invites, revocation feed) as JSON
    /// on stdout, for `admin import` into another store (SQLite or
    /// PostgreSQL).
    Export,
    /// Load a state export from stdin, in one transaction (all or nothing).
    /// Refuses a store that is not empty unless --force.
    Import {
        /// Replace everything in a non-empty store (stop the instances
        /// using it first).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Every user, with their roles and key count.
    List,
    /// One user and their keys.
    Show { email: String },
    /// Disable a user: sign-in is refused, and every session ends within
    /// about two seconds on every instance.
    Disable { email: String },
    /// Enable a disabled user (their old sessions stay ended).
    Enable { email: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// A user's keys, revoked ones included.
    List { email: String },
    /// Revoke a key (by the KEY id that `keys list` shows, or the full
    /// credential id). It stays listed as revoked; sessions made with it end
    /// within about two seconds.
    Revoke {
        key: String,
        /// Also when it is the user's last key (they then need a recovery
        /// invite to sign in again).
        #[arg(long)]
        allow_last_key: bool,
    },
}

#[derive(Subcommand)]
pub enum InvitesCommand {
    /// Create a single-use invite; prints its URL alone on one line.
    Create(InviteCreate),
    /// Pending invites (all of them with --all), newest first.
    List {
        /// Also used, cancelled and expired invites.
        #[arg(long)]
        all: bool,
    },
    /// Cancel a pending invite (by the ID `invites list` shows, or a unique
    /// prefix of it).
    Cancel { id: String },
}

#[derive(Args)]
pub struct InviteCreate {
    /// The invitee's email address (a new user).
    #[arg(long, required_unless_present = "recover", conflicts_with = "recover")]
    email: Option<String>,
    /// A role to grant (repeat for several).
    #[arg(
        long = "role",
        required_unless_present = "recover",
        conflicts_with = "recover"
    )]
    roles: Vec<String>,
    /// Recovery: add a key to this existing user (who lost theirs) instead
    /// of creating one.
    #[arg(long, value_name = "EMAIL")]
    recover: Option<String>,
    /// Recovery: revoke the user's other keys when the new one is added.
    #[arg(long, requires = "recover")]
    revoke_other_keys: bool,
    /// How long the invite stays valid (1m to 30d).
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// Also print a QR code (on stderr) for a phone to scan.
    #[arg(long)]
    qr: bool,
}

#[derive(Subcommand)]
pub enum RolesCommand {
    /// Grant a role (it comes with the user's next sign-in).
    Grant { email: String, role: String },
    /// Take a role away (the user's sessions end, as they carry the roles).
    Revoke { email: String, role: String },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// End every session of a user, on every instance, within about two
    /// seconds. Their keys still work to sign in again.
    Revoke { email: String },
}

/// What went wrong, and so the exit code.
enum Failure {
    /// Bad arguments or configuration: exit 2.
    Usage(String),
    /// Anything at run time: exit 1.
    Run(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Run(e.to_string())
    }
}

struct Ctx {
    config: Config,
    store: DynStore,
    audit: crate::audit::Audit,
    json: bool,
    now: u64,
}

impl Ctx {
    fn admin(&self) -> Admin<'_> {
        Admin {
            store: self.store.as_ref(),
            audit: &self.audit,
            actor: Actor::cli(),
        }
    }

    /// Print the JSON answer, or the text one.
    fn answer(&self, json: Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{json:#}");
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

pub async fn run(args: AdminArgs) -> ExitCode {
    // Arguments are checked before the store is opened: a typo never waits
    // on a database.
    if let Err(f) = check(&args.command) {
        return exit(f);
    }
    let (config, store) = match super::config_and_store(args.config.as_deref()).await {
        Ok(both) => both,
        Err(code) => return code,
    };
    let ctx = Ctx {
        config,
        store,
        audit: crate::audit::Audit::to_stderr("cli".into()),
        json: args.json,
        now: crate::server::now_unix(),
    };
    ctx.audit.persist(ctx.store.clone());
    let code = match dispatch(&ctx, args.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => exit(f),
    };
    if !ctx.audit.flush(std::time::Duration::from_secs(10)).await {
        eprintln!(
            "warning: {} audit events could not be stored in the database (they are in the \
             lines above)",
            ctx.audit.waiting()
        );
    }
    code
}

fn exit(f: Failure) -> ExitCode {
    match f {
        Failure::Usage(m) => {
            eprintln!("error: {m}");
            ExitCode::from(super::EXIT_CONFIG)
        }
        Failure::Run(m) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}

/// Validate what can be validated without the store.
fn check(cmd: &AdminCommand) -> Result<(), Failure> {
    let email = |e: &str, what: &str| {
        Email::parse(e)
            .map(|_| ())
            .map_err(|m| Failure::Usage(format!("{what}: {m}")))
    };
    let role = |r: &str| {
        Role::parse(r)
            .map(|_| ())
            .map_err(|m| Failure::Usage(format!("ROLE: {m}")))
    };
    match cmd {
        AdminCommand::Users { command } => match command {
            UsersCommand::List => Ok(()),
            UsersCommand::Show { email: e }
            | UsersCommand::Disable { email: e }
            | UsersCommand::Enable { email: e } => email(e, "EMAIL"),
        },
        AdminCommand::Keys { command } => match command {
            KeysCommand::List { email: e } => email(e, "EMAIL"),
            KeysCommand::Revoke { .. } => Ok(()),
        },
        AdminCommand::Invites {
            command: InvitesCommand::Create(c),
        }
        | AdminCommand::Invite(c) => {
            if let Some(e) = &c.email {
                email(e, "--email")?;
            }
            if let Some(e) = &c.recover {
                email(e, "--recover")?;
            }
            for r in &c.roles {
                Role::parse(r).map_err(|m| Failure::Usage(format!("--role: {m}")))?;
            }
            crate::admin::parse_ttl(&c.ttl)
                .map(|_| ())
                .map_err(|m| Failure::Usage(format!("--ttl: {m}")))
        }
        AdminCommand::Invites { .. } => Ok(()),
        AdminCommand::Roles { command } => match command {
            RolesCommand::Grant { email: e, role: r }
            | RolesCommand::Revoke { email: e, role: r } => {
                email(e, "EMAIL")?;
                role(r)
            }
        },
        AdminCommand::Sessions {
            command: SessionsCommand::Revoke { email: e },
        } => email(e, "EMAIL"),
        AdminCommand::Export | AdminCommand::Import { .. } => Ok(()),
    }
}

async fn dispatch(ctx: &Ctx, cmd: AdminCommand) -> Result<(), Failure> {
    match cmd {
        AdminCommand::Users { command } => users(ctx, command).await,
        AdminCommand::Keys { command } => keys(ctx, command).await,
        AdminCommand::Invites { command } => invites(ctx, command).await,
        AdminCommand::Invite(c) => create_invite(ctx, c).await,
        AdminCommand::Export => super::export::export(&ctx.store, &ctx.audit)
            .await
            .map_err(Failure::Run),
        AdminCommand::Import { force } => {
            let done = super::export::import(&ctx.store, &ctx.audit, force)
                .await
                .map_err(|(usage, m)| {
                    if usage {
                        Failure::Usage(m)
                    } else {
                        Failure::Run(m)
                    }
                })?;
            ctx.answer(serde_json::json!({ "imported": done }), || {
                format!("imported {done}")
            });
            Ok(())
        }
        AdminCommand::Roles { command } => roles(ctx, command).await,
        AdminCommand::Sessions {
            command: SessionsCommand::Revoke { email },
        } => {
            let u = user(ctx, &email).await?;
            let epoch = ctx.admin().revoke_sessions(&u.user, ctx.now).await?;
            ctx.answer(
                json!({ "subject": u.user.subject, "email": u.user.email, "epoch": epoch }),
                || {
                    format!(
                        "Ended every session of {}: within about two seconds every instance refuses them. Their keys still sign in.",
                        u.user.email
                    )
                },
            );
            Ok(())
        }
    }
}

/// A user by email (checked by `check`), or exit 1.
async fn user(ctx: &Ctx, email: &str) -> Result<UserKeys, Failure> {
    let email = Email::parse(email).map_err(Failure::Usage)?;
    crate::admin::user_by_email(ctx.store.as_ref(), &email)
        .await?
        .ok_or_else(|| Failure::Run(format!("no user with the email {email}")))
}

async fn users(ctx: &Ctx, cmd: UsersCommand) -> Result<(), Failure> {
    match cmd {
        UsersCommand::List => {
            let all = ctx.store.users_with_keys().await?;
            ctx.answer(Value::Array(all.iter().map(user_json).collect()), || {
                users_table(&all)
            });
        }
        UsersCommand::Show { email } => {
            let u = user(ctx, &email).await?;
            ctx.answer(user_json(&u), || {
                format!(
                    "{}\n  subject   {}\n  name      {}\n  roles     {}\n  status    {}\n  created   {}\n  keys      {} active of {}\n\n{}",
                    u.user.email,
                    u.user.subject,
                    u.user.display_name,
                    roles_text(&u.user.roles),
                    if u.user.disabled { "disabled" } else { "active" },
                    time(u.user.created),
                    u.active_keys(),
                    u.credentials.len(),
                    keys_table(&u.credentials)
                )
            });
        }
        UsersCommand::Disable { email } => set_disabled(ctx, &email, true).await?,
        UsersCommand::Enable { email } => set_disabled(ctx, &email, false).await?,
    }
    Ok(())
}

async fn set_disabled(ctx: &Ctx, email: &str, disabled: bool) -> Result<(), Failure> {
    let u = user(ctx, email).await?;
    let changed = ctx.admin().set_disabled(&u.user, disabled, ctx.now).await?;
    ctx.answer(
        json!({ "subject": u.user.subject, "email": u.user.email, "disabled": disabled, "changed": changed }),
        || match (disabled, changed) {
            (true, true) => format!(
                "Disabled {}: sign-in is refused, and every instance refuses their sessions within about two seconds.",
                u.user.email
            ),
            (false, true) => format!(
                "Enabled {}: they can sign in again (earlier sessions stay ended).",
                u.user.email
            ),
            (true, false) => format!("{} was already disabled.", u.user.email),
            (false, false) => format!("{} was not disabled.", u.user.email),
        },
    );
    Ok(())
}

async fn keys(ctx: &Ctx, cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::List { email } => {
            let u = user(ctx, &email).await?;
            ctx.answer(user_json(&u)["keys"].clone(), || keys_table(&u.credentials));
        }
        KeysCommand::Revoke {
            key,
            allow_last_key,
        } => {
            let (u, c) = find_key(ctx.store.as_ref(), key.trim())
                .await?
                .ok_or_else(|| {
                    Failure::Run(format!(
                        "no key {key:?}: give the KEY shown by `tapgate admin keys list EMAIL`"
                    ))
                })?;
            let done = ctx
                .admin()
                .revoke_key(&u.user, &c, allow_last_key, ctx.now)
                .await
                .map_err(|e| match e {
                    StoreError::LastKey => Failure::Run(format!(
                        "{} is the last key of {}: after revoking it they cannot sign in until they get a recovery invite \
                         (`tapgate admin invites create --recover {}`). Add --allow-last-key to revoke it anyway.",
                        c.id.digest(),
                        u.user.email,
                        u.user.email
                    )),
                    other => other.into(),
                })?;
            ctx.answer(
                json!({ "key": c.id.digest(), "id": c.id.to_base64url(), "subject": u.user.subject, "email": u.user.email, "changed": done }),
                || {
                    if done {
                        format!(
                            "Revoked key {} ({:?}) of {}; sessions made with it end within about two seconds.",
                            c.id.digest(),
                            c.nickname,
                            u.user.email
                        )
                    } else {
                        format!("Key {} of {} was already revoked.", c.id.digest(), u.user.email)
                    }
                },
            );
        }
    }
    Ok(())
}

async fn invites(ctx: &Ctx, cmd: InvitesCommand) -> Result<(), Failure> {
    match cmd {
        InvitesCommand::Create(c) => create_invite(ctx, c).await,
        InvitesCommand::List { all } => {
            let list: Vec<_> = ctx
                .store
                .invites()
                .await?
                .into_iter()
                .filter(|i| all || i.is_pending(ctx.now))
                .collect();
            ctx.answer(
                Value::Array(list.iter().map(|i| invite_json(i, ctx.now)).collect()),
                || invites_table(&list, ctx.now, all),
            );
            Ok(())
        }
        InvitesCommand::Cancel { id } => {
            let list = ctx.store.invites().await?;
            let invite = find_invite(&list, &id).map_err(|e| match e {
                InviteLookup::NotFound => Failure::Run(format!(
                    "no invite {id:?}: give the ID shown by `tapgate admin invites list` (6 characters at least)"
                )),
                InviteLookup::Ambiguous(n) => {
                    Failure::Run(format!("{n} invites start with {id:?}: give more of the ID"))
                }
            })?;
            ctx.admin()
                .cancel_invite(invite, ctx.now)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => Failure::Run(format!(
                        "invite {} is {}, not pending: nothing to cancel",
                        crate::admin::short_id(&invite.token_hash),
                        invite.state(ctx.now)
                    )),
                    other => other.into(),
                })?;
            ctx.answer(
                json!({ "id": invite.token_hash, "state": "cancelled" }),
                || {
                    format!(
                        "Cancelled invite {} for {}; its link no longer works.",
                        crate::admin::short_id(&invite.token_hash),
                        invite.email
                    )
                },
            );
            Ok(())
        }
    }
}

async fn create_invite(ctx: &Ctx, c: InviteCreate) -> Result<(), Failure> {
    let ttl = crate::admin::parse_ttl(&c.ttl).map_err(|m| Failure::Usage(format!("--ttl: {m}")))?;
    let origin = &ctx.config.public_origin;
    let (made, who, about) = match (&c.email, &c.recover) {
        (Some(email), None) => {
            let email = Email::parse(email).map_err(|m| Failure::Usage(format!("--email: {m}")))?;
            let roles = c
                .roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| Failure::Usage(format!("--role: {m}")))?;
            if ctx.store.user_by_email(&email).await?.is_some() {
                return Err(Failure::Run(format!(
                    "{email} already has an account; to give them a new key use `--recover {email}`"
                )));
            }
            let made = ctx
                .admin()
                .invite(origin, email.clone(), roles.clone(), ttl, ctx.now)
                .await?;
            (
                made,
                format!("{email} ({})", roles_text(&roles)),
                json!({ "email": email, "roles": roles }),
            )
        }
        (None, Some(email)) => {
            let u = user(ctx, email).await?;
            let made = ctx
                .admin()
                .recovery_invite(origin, &u.user, c.revoke_other_keys, ttl, ctx.now)
                .await?;
            let what = if c.revoke_other_keys {
                "adds a key and revokes their other keys"
            } else {
                "adds a key, keeping their other keys"
            };
            (
                made,
                format!("{} — recovery: {what}", u.user.email),
                json!({
                    "email": u.user.email,
                    "recovery_for": u.user.subject,
                    "revoke_other_keys": c.revoke_other_keys,
                }),
            )
        }
        // clap allows exactly one of the two.
        _ => return Err(Failure::Usage("give --email or --recover".into())),
    };
    if ctx.json {
        let mut out = json!({
            "id": made.id,
            "short_id": crate::admin::short_id(&made.id),
            "url": made.url,
            "expires": made.expires,
        });
        if let (Some(o), Some(a)) = (out.as_object_mut(), about.as_object()) {
            o.extend(a.clone());
        }
        println!("{out:#}");
    } else {
        eprintln!(
            "Invite {} for {who}, valid for {} (single use):",
            crate::admin::short_id(&made.id),
            humantime::format_duration(ttl)
        );
        println!("{}", made.url);
    }
    if c.qr
        && let Some(code) = crate::invite::terminal_qr(&made.url)
    {
        eprintln!("{code}");
    }
    Ok(())
}

async fn roles(ctx: &Ctx, cmd: RolesCommand) -> Result<(), Failure> {
    let (email, role, grant) = match cmd {
        RolesCommand::Grant { email, role } => (email, role, true),
        RolesCommand::Revoke { email, role } => (email, role, false),
    };
    let role = Role::parse(&role).map_err(|m| Failure::Usage(format!("ROLE: {m}")))?;
    let u = user(ctx, &email).await?;
    let roles = ctx
        .admin()
        .change_role(&u.user, &role, grant, ctx.now)
        .await?;
    let had = u.user.roles.contains(&role);
    ctx.answer(
        json!({ "subject": u.user.subject, "email": u.user.email, "roles": roles }),
        || match (grant, had) {
            (true, false) => format!(
                "Granted {role} to {}; it comes with their next sign-in. Roles now: {}.",
                u.user.email,
                roles_text(&roles)
            ),
            (false, true) => format!(
                "Took {role} from {}; their sessions end within about two seconds. Roles now: {}.",
                u.user.email,
                roles_text(&roles)
            ),
            (true, true) => format!("{} already has {role}.", u.user.email),
            (false, false) => format!("{} does not have {role}.", u.user.email),
        },
    );
    Ok(())
}

// ---- text output ----

fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn roles_text(roles: &[Role]) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
    }
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn users_table(all: &[UserKeys]) -> String {
    if all.is_empty() {
        return "No users yet.".into();
    }
    table(
        &["EMAIL", "ROLES", "KEYS", "STATUS", "SUBJECT"],
        all.iter()
            .map(|u| {
                vec![
                    u.user.email.to_string(),
                    roles_text(&u.user.roles),
                    format!("{}/{}", u.active_keys(), u.credentials.len()),
                    if u.user.disabled {
                        "disabled".into()
                    } else {
                        "active".into()
                    },
                    u.user.subject.to_string(),
                ]
            })
            .collect(),
    )
}

fn keys_table(keys: &[CredentialRecord]) -> String {
    if keys.is_empty() {
        return "No keys.".into();
    }
    table(
        &[
            "KEY",
            "NAME",
            "TYPE",
            "AUTHENTICATOR",
            "CREATED",
            "LAST USED",
            "STATUS",
        ],
        keys.iter()
            .map(|c| {
                let name = crate::model::parse_aaguid(&c.aaguid)
                    .filter(|a| a != &[0u8; 16])
                    .and_then(|a| tapgate_webauthn::authenticator_name(&a))
                    .map_or_else(|| c.aaguid.clone(), str::to_owned);
                vec![
                    c.id.digest(),
                    c.nickname.clone(),
                    if c.backup_eligible {
                        "synced".into()
                    } else {
                        "device-bound".into()
                    },
                    name,
                    time(c.created),
                    c.last_used.map_or_else(|| "never".into(), time),
                    c.revoked
                        .map_or_else(|| "active".into(), |t| format!("revoked {}", time(t))),
                ]
            })
            .collect(),
    )
}

fn invites_table(list: &[crate::store::InviteRecord], now: u64, all: bool) -> String {
    if list.is_empty() {
        return if all {
            "No invites.".into()
        } else {
            "No pending invites (--all shows used, cancelled and expired ones).".into()
        };
    }
    table(
        &[
            "ID",
            "EMAIL",
            "KIND",
            "ROLES",
            "STATE",
            "EXPIRES",
            "CREATED BY",
        ],
        list.iter()
            .map(|i| {
                vec![
                    crate::admin::short_id(&i.token_hash).to_owned(),
                    i.email.to_string(),
                    match (&i.subject, i.revoke_other_keys) {
                        (None, _) => "new user".into(),
                        (Some(_), false) => "recovery".into(),
                        (Some(_), true) => "recovery, revokes other keys".into(),
                    },
                    roles_text(&i.roles),
                    i.state(now).into(),
                    time(i.expires),
                    i.created_by.clone(),
                ]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["A", "LONGER", "C"],
            vec![
                vec!["wide cell".into(), "x".into(), "last".into()],
                vec!["y".into(), "z".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "A          LONGER  C\nwide cell  x       last\ny          z\n"
        );
    }
}
