//! `tapgate migrate`: apply the store's schema migrations now (instead of at
//! the next start) and print the schema version. Safe while instances run
//! and when several run it at once: PostgreSQL migrations hold an advisory
//! lock. Exit codes: 0 migrated (or already current), 1 the store failed,
//! 2 bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

pub async fn run(config: Option<PathBuf>) -> ExitCode {
    // Opening the store is what migrates it.
    let store = match super::config_and_store(config.as_deref()).await {
        Ok((_, store)) => store,
        Err(code) => return code,
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
