//! `tapgate admin …`: act on the configured store directly (SQLite file or
//! PostgreSQL), as the operator.

use crate::config::{Config, Mode};
use crate::model::{Email, Role};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a single-use invite and print its URL alone on one line.
    Invite {
        /// The invitee's email address.
        #[arg(long)]
        email: String,
        /// A role to grant (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the invite stays valid.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Configuration file; without it, the demo's defaults (./tapgate-data/).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also print a QR code (on stderr) for a phone to scan.
        #[arg(long)]
        qr: bool,
    },
}

pub async fn run(cmd: AdminCommand) -> ExitCode {
    match cmd {
        AdminCommand::Invite {
            email,
            roles,
            ttl,
            config,
            qr,
        } => {
            let mode = if config.is_some() {
                Mode::Serve
            } else {
                Mode::Demo
            };
            let config = match Config::load(mode, config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    super::report(&e);
                    return ExitCode::from(super::EXIT_CONFIG);
                }
            };
            let email = match Email::parse(&email) {
                Ok(e) => e,
                Err(m) => {
                    eprintln!("error: --email: {m}");
                    return ExitCode::from(super::EXIT_CONFIG);
                }
            };
            let mut parsed = Vec::new();
            for r in &roles {
                match Role::parse(r) {
                    Ok(r) => parsed.push(r),
                    Err(m) => {
                        eprintln!("error: --role: {m}");
                        return ExitCode::from(super::EXIT_CONFIG);
                    }
                }
            }
            let ttl = match humantime::parse_duration(&ttl) {
                Ok(d) if d.as_secs() >= 60 && d.as_secs() <= 30 * 86400 => d,
                _ => {
                    eprintln!(
                        "error: --ttl: {ttl:?} must be a duration between 1m and 30d, like 24h"
                    );
                    return ExitCode::from(super::EXIT_CONFIG);
                }
            };
            let store = match crate::store::open(&config.store_url).await {
                Ok(s) => s,
                Err(e) => {
                    super::report(&e);
                    return ExitCode::FAILURE;
                }
            };
            let now = crate::server::now_unix();
            match crate::invite::create(
                store.as_ref(),
                &config.public_origin,
                email.clone(),
                parsed,
                ttl,
                "cli",
                now,
            )
            .await
            {
                Ok(invite) => {
                    eprintln!(
                        "Invite for {email}, valid for {} (single use):",
                        humantime::format_duration(ttl)
                    );
                    println!("{}", invite.url);
                    if qr && let Some(code) = crate::invite::terminal_qr(&invite.url) {
                        eprintln!("{code}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    super::report(&e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
