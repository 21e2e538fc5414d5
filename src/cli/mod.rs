//! The command line. Only this module sees clap. Exit codes: 0 success,
//! 1 failure at run time, 2 bad usage or invalid configuration.

mod admin;
mod audit;
mod check;
mod explain;
mod export;
mod migrate;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// tapgate: a passkey / hardware-key front door for HTTP services.
///
/// tapgate sits in front of a service, signs people in with WebAuthn
/// (passkeys, security keys, biometrics) and forwards only the requests its
/// policy allows, with a signed identity assertion the service can verify.
#[derive(Parser)]
#[command(name = "tapgate", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Try it: run on http://localhost:8080 (or $PORT) in front of a built-in
    /// echo app, with state in ./tapgate-data/, and print an admin invite.
    ///
    /// Takes the same configuration keys as `serve` (all optional here), so
    /// `TAPGATE_UPSTREAM=http://127.0.0.1:3000 tapgate demo` guards your own app.
    Demo {
        /// Optional configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run in production: in front of `upstream`, configured by a TOML file
    /// and TAPGATE_SECTION__KEY environment variables.
    Serve {
        /// Configuration file (TOML). Without it, only environment variables count.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print every problem with its key path.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check with the demo's defaults (as `tapgate demo` would load it).
        #[arg(long)]
        demo: bool,
    },
    /// Show what the policy decides for a user and a request, and which rule
    /// decides it, without a running server.
    ///
    /// Exit code 0 when the request would be allowed, 3 when it would need a
    /// sign-in or step-up or be denied.
    Explain(explain::ExplainArgs),
    /// Administer users, keys, invites, roles and sessions in the configured
    /// store (SQLite or PostgreSQL), as the operator.
    ///
    /// Text for people by default, `--json` for scripts. Every change is an
    /// audit event with the actor `cli` (JSON on stderr). Revocations reach
    /// every running instance within about two seconds.
    Admin(admin::AdminArgs),
    /// Read the stored audit record: the events of every instance, in one
    /// order (`list`).
    Audit(audit::AuditArgs),
    /// Print a new P-256 signing key (PKCS#8 PEM) for `keys.signing_key_file`.
    Keygen,
    /// Apply the store's schema migrations now and print the schema version
    /// (`serve` also migrates at start; several at once are safe).
    Migrate {
        /// Configuration file; without it, the demo's defaults (./tapgate-data/).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Parse the command line, run, and map the outcome to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen => {
            print!("{}", crate::token::SigningKey::generate_pem());
            ExitCode::SUCCESS
        }
        Command::Check { config, demo } => check::run(config.as_deref(), demo),
        Command::Demo { config } => runtime(|| run::run(crate::config::Mode::Demo, config)),
        Command::Serve { config } => runtime(|| run::run(crate::config::Mode::Serve, config)),
        Command::Explain(args) => runtime(|| explain::run(args)),
        Command::Admin(args) => runtime(|| admin::run(args)),
        Command::Audit(args) => runtime(|| audit::run(args)),
        Command::Migrate { config } => runtime(|| migrate::run(config)),
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    // One worker thread: `serve` starts a single-threaded runtime of its
    // own for every further core (crate::connections), so that requests
    // never hop between threads; the other commands need no more.
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Print an error and its causes, one per line.
pub(crate) fn report(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
}

pub(crate) const EXIT_CONFIG: u8 = 2;

/// The configuration of a store-reading command (`--config F`, or the
/// demo's defaults without it) and its opened store. On failure, the
/// problem is printed and the exit code returned: 2 for the
/// configuration, 1 for the store.
pub(crate) async fn config_and_store(
    file: Option<&std::path::Path>,
) -> Result<(crate::config::Config, crate::store::DynStore), ExitCode> {
    let mode = if file.is_some() {
        crate::config::Mode::Serve
    } else {
        crate::config::Mode::Demo
    };
    let config = crate::config::Config::load(mode, file).map_err(|e| {
        report(&e);
        ExitCode::from(EXIT_CONFIG)
    })?;
    let store = crate::store::open_config(&config).await.map_err(|e| {
        report(&e);
        ExitCode::FAILURE
    })?;
    Ok((config, store))
}
