//! Driving the real `tapgate` binary: a clean command, bounded runs, free
//! ports, long-running children (killed on drop) whose output is either
//! collected in memory ([`Running`]) or appended to a log file
//! ([`Logged`]), and waiting for `/.tapgate/healthz`.

use super::Gate;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This build's `tapgate` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_tapgate");

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("address")
        .port()
}

/// `bin` in `cwd` with a clean environment for configuration: no inherited
/// `TAPGATE_*`, `PORT` or `K_REVISION`; `RUST_LOG=info` (a later `.env`
/// call overrides it).
pub fn clean_command(bin: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TAPGATE_") || k == "PORT" || k == "K_REVISION" {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

/// This build's binary with a clean environment (see [`clean_command`]).
pub fn tapgate(cwd: &Path) -> Command {
    clean_command(Path::new(BIN), cwd)
}

/// A fresh Ed25519 signing key from `tapgate keygen`, written to `path`.
pub fn write_signing_key(path: &Path) {
    let key = Command::new(BIN).arg("keygen").output().expect("keygen");
    assert!(key.status.success(), "{key:?}");
    std::fs::write(path, &key.stdout).expect("write the signing key");
}

/// Run to completion with stdin closed and the output captured, at most
/// 30 s.
pub fn run_bounded(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn tapgate");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tapgate did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `/.tapgate/healthz` every `poll` until it answers 200; panics after
/// `within` with `what` and `context()` (a log tail, say) in the message.
pub async fn wait_healthy(
    gate: &Gate,
    within: Duration,
    poll: Duration,
    what: &str,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = gate.http.get(gate.url("/.tapgate/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not healthy within {} s{}",
            within.as_secs(),
            context()
        );
        tokio::time::sleep(poll).await;
    }
}

/// A long-running child whose stdout lines and stderr text are collected;
/// killed on drop.
pub struct Running {
    pub child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(mut c: Command) -> Running {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tapgate");
        let out: Arc<Mutex<Vec<String>>> = Arc::default();
        let err: Arc<Mutex<String>> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                o.lock().unwrap().push(line);
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let e = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, out, err }
    }

    /// Stdout lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Stderr printed so far.
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// The first stdout line matching `pred`, waiting at most `secs`.
    pub async fn wait_line(
        &mut self,
        secs: u64,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "tapgate exited ({status}) before printing {what}\nstdout:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {secs} s\nstdout:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Audit events printed so far.
    pub fn audit(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["log_type"] == "audit")
            .collect()
    }

    /// The audit event with these field values, waiting at most 5 s.
    pub async fn audit_event(&self, fields: &[(&str, &str)]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(ev) = self
                .audit()
                .into_iter()
                .find(|ev| fields.iter().all(|(k, v)| ev[*k] == *v))
            {
                return ev;
            }
            if Instant::now() > deadline {
                panic!(
                    "no audit event with {fields:?}; audit so far:\n{}",
                    self.audit()
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A long-running child with stdin closed whose stdout and stderr are
/// appended to a log file; SIGKILLed (what `Child::kill` sends on Unix)
/// and reaped on drop.
pub struct Logged {
    child: Child,
    log: PathBuf,
}

impl Logged {
    pub fn spawn(mut c: Command, log: &Path) -> Logged {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        c.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        Logged {
            child: c.spawn().expect("spawn tapgate"),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
