//! Configuration parsing: arbitrary TOML text plus `TAPGATE_*`/`PORT`
//! environment pairs through `Config::from_sources`, in both modes.
//!
//! Input: a mode byte (even: serve, odd: demo), then the TOML text up to
//! the first 0 byte, then `NAME=value` lines as the environment.
//!
//! Property: never panics; a refusal names at least one problem.
//!
//! `trust.root_files` makes the parser read the files it names. Inputs
//! that could name a device or a process file (`/dev`, `/proc`, `/sys`,
//! `fd`, or a TOML `\u` escape near `root`) are skipped, so the fuzzer does
//! not read `/dev/zero` forever; any other path is read (most do not exist).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapgate::config::{Config, ConfigError, Mode};

fn names_special_files(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("root")
        && ["dev", "proc", "sys", "fd", "\\u", "stdin", "tty"]
            .iter()
            .any(|s| t.contains(s))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (toml, env) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let toml = String::from_utf8_lossy(toml);
    let env = String::from_utf8_lossy(env);
    if names_special_files(&toml) || names_special_files(&env) {
        return;
    }
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mode = if mode % 2 == 0 {
        Mode::Serve
    } else {
        Mode::Demo
    };
    match Config::from_sources(mode, Some(&toml), &env) {
        Ok(config) => {
            // What `tapgate check` prints for a good file.
            let _ = config.trust.store();
        }
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "refused without naming a problem");
            for p in &problems {
                assert!(!p.key.is_empty(), "a problem without its key: {p:?}");
            }
        }
        Err(ConfigError::Read { .. }) => {}
    }
});
