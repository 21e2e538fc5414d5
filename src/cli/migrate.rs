//! `tapgate migrate`: apply the store's schema migrations now (instead of at
//! the next start) and print the schema version. Safe while instances run
//! and when several run it at once: PostgreSQL migrations hold an advisory
//! lock. Exit codes: 0 migrated (or already current), 1 the store failed,
//! 2 bad configuration.

use crate::config::{Config, Mode};
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn run(config: Option<PathBuf>) -> ExitCode {
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
    // Opening the store is what migrates it.
    let store = match crate::store::open_config(&config).await {
        Ok(s) => s,
        Err(e) => {
            super::report(&e);
            return ExitCode::FAILURE;
        }
    };
    match store.schema_version().await {
        Ok(v) => {
            println!("schema version {v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::report(&e);
            ExitCode::FAILURE
        }
    }
}
