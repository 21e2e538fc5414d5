//! `tapgate check`: load the configuration exactly as `serve` (or `demo`)
//! would and list every problem with its key path.

use crate::config::{Config, ConfigError, Mode};
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: Option<&Path>, demo: bool) -> ExitCode {
    let mode = if demo { Mode::Demo } else { Mode::Serve };
    match Config::load(mode, file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {}: {}", w.key, w.message);
            }
            println!("configuration OK");
            println!("  public URL : {}", c.public_origin);
            println!("  rp id      : {}", c.rp_id);
            match &c.upstream {
                crate::config::Upstream::Url(u) => println!("  upstream   : {u}"),
                crate::config::Upstream::Echo => println!("  upstream   : built-in echo app"),
            }
            println!("  listen     : {}", c.listen);
            println!("  store      : {}", redact_password(&c.store_url));
            let roles = c.roles.as_ref().map_or("(not declared)".to_owned(), |r| {
                r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            });
            println!("  roles      : {roles}");
            println!(
                "  roots      : {} operator root certificate(s)",
                c.trust.roots.len()
            );
            println!(
                "  routes     : {}",
                if c.routes.is_empty() {
                    "none (every signed-in user may pass)".to_string()
                } else {
                    c.routes.len().to_string()
                }
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("configuration has {} problem(s):", problems.len());
            for p in problems {
                eprintln!("  {}: {}", p.key, p.message);
            }
            ExitCode::from(super::EXIT_CONFIG)
        }
        Err(e) => {
            super::report(&e);
            ExitCode::from(super::EXIT_CONFIG)
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact_password("postgres://tg:s3cret@db:5432/tapgate"),
            "postgres://tg:***@db:5432/tapgate"
        );
        assert_eq!(
            super::redact_password("sqlite://tapgate-data/t.db"),
            "sqlite://tapgate-data/t.db"
        );
    }
}
