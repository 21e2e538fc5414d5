//! `tapgate demo` and `tapgate serve`: load, build, bind, print how to get
//! in, serve until SIGTERM.

use crate::config::{Config, Mode, Upstream as UpstreamConfig};
use crate::server::{self, App};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(mode: Mode, file: Option<PathBuf>) -> ExitCode {
    let started = std::time::Instant::now();
    let config = match Config::load(mode, file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            super::report(&e);
            eprintln!("(run `tapgate check` to list every problem)");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    init_logs(mode);
    for w in &config.warnings {
        tracing::warn!(key = %w.key, "{}", w.message);
    }
    match start(mode, config, file, started).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::report(e.as_ref());
            ExitCode::FAILURE
        }
    }
}

fn init_logs(mode: Mode) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match mode {
        Mode::Demo => builder.compact().try_init(),
        Mode::Serve => builder.json().flatten_event(true).try_init(),
    };
}

async fn start(
    mode: Mode,
    mut config: Config,
    file: Option<PathBuf>,
    started: std::time::Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let key = server::load_key(&config.signing_key)?;
    let store = crate::store::open_config(&config).await?;

    // The demo's echo app listens on a private loopback port of its own.
    let echo_listener = match config.upstream {
        UpstreamConfig::Echo => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", l.local_addr()?);
            config.upstream = UpstreamConfig::Url(url.parse()?);
            Some(l)
        }
        UpstreamConfig::Url(_) => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| server::StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let app = App::with_parts(config, key, store)?;
    // Answer nothing before the revocation feed has been read once: a new
    // process (a restart, another instance) would otherwise accept, for
    // its first moments, every session revoked within the last session
    // lifetime. The listener is bound, so early clients wait in its queue.
    app.refresh_revocations().await?;
    if let Some(l) = echo_listener {
        let echo = crate::echo::router(app.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, echo).await;
        });
    }

    let public = app.config.public_origin.clone();
    let upstream = match &app.config.upstream {
        UpstreamConfig::Url(u) => u.to_string(),
        UpstreamConfig::Echo => "echo".into(),
    };
    tracing::info!(listen = %app.config.listen, %public, %upstream, startup_ms = started.elapsed().as_millis() as u64, "tapgate ready");
    if mode == Mode::Demo {
        println!("tapgate demo: {public}  (guarding {upstream}; state in ./tapgate-data/)");
        if app.store.count_users().await? == 0 {
            let email = crate::model::Email("admin@localhost.localdomain".into());
            let roles = vec![crate::model::Role("admin".into())];
            let invite = crate::invite::create(
                app.store.as_ref(),
                &public,
                email,
                roles,
                Duration::from_secs(24 * 3600),
                "demo",
                server::now_unix(),
            )
            .await?;
            println!(
                "No user yet. Open this single-use admin invite in a browser on this machine (valid 24 h):"
            );
            println!();
            println!("{}", invite.url);
            println!();
            if let Some(qr) = crate::invite::terminal_qr(&invite.url) {
                println!("{qr}");
            }
        } else {
            println!(
                "Sign in at {public}/.tapgate/login — invite teammates with `tapgate admin invites create --email E --role R`."
            );
        }
    }
    tokio::spawn(reload_on_sighup(app.clone(), mode, file));
    server::serve(listener, app.clone()).await?;
    // Cloud Run allows 10 s after SIGTERM: store what the audit trail still
    // holds (every event is in the log already).
    if !app.audit.flush(Duration::from_secs(5)).await {
        tracing::warn!(
            waiting = app.audit.waiting(),
            "shutting down with audit events not yet stored; they are in this instance's log"
        );
    }
    Ok(())
}

/// SIGHUP: read the configuration again and, if it is valid, swap in the new
/// policy (routes and trust settings) atomically. A bad file keeps the old
/// policy. Other keys (listen, store, keys, upstream) need a restart.
async fn reload_on_sighup(app: std::sync::Arc<App>, mode: Mode, file: Option<PathBuf>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(mode, file.as_deref()) {
                Ok(new) => {
                    let policy = server::policy_of(&new);
                    let routes = policy.rules().len();
                    app.trust.store(std::sync::Arc::new(new.trust.store()));
                    app.policy.store(std::sync::Arc::new(policy));
                    tracing::info!(
                        routes,
                        "configuration reloaded: new policy in force (other changes need a restart)"
                    );
                    let mut ev = crate::audit::AuditEvent::new(
                        "policy_reloaded",
                        crate::audit::Outcome::Success,
                    );
                    ev.reason = Some(format!("{routes} route(s)"));
                    app.audit.record(ev);
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed: keeping the policy in force");
                    let mut ev = crate::audit::AuditEvent::new(
                        "policy_reloaded",
                        crate::audit::Outcome::Failure,
                    );
                    ev.reason = Some(e.to_string());
                    app.audit.record(ev);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (app, mode, file);
    }
}
