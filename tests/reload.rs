//! Issue 3: SIGHUP reloads the policy atomically — a valid new file takes
//! effect on the running process, a bad one keeps the policy in force —
//! and each reload is audited. Runs the real binary.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Demo {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(dir: &std::path::Path, port: u16) -> Demo {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tapgate"));
        c.current_dir(dir)
            .args(["demo", "--config", "tapgate.toml"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("TAPGATE_") || k == "PORT" {
                c.env_remove(k);
            }
        }
        c.env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn tapgate");
        let out: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                o.lock().unwrap().push(line);
            }
        });
        Demo { child, out }
    }

    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.out.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s: {:?}",
                self.out.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(ok.success());
    }

    async fn reloaded(&self, nth: usize, outcome: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events: Vec<Value> = self
                .out
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["event"] == "policy_reloaded")
                .collect();
            if let Some(ev) = events.get(nth) {
                assert_eq!(ev["outcome"], outcome, "{ev}");
                return ev.clone();
            }
            assert!(Instant::now() < deadline, "no policy_reloaded event #{nth}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const ADMINS: &str = "roles = [\"admin\", \"ops\"]\n[[route]]\npath = \"/admin/\"\nallow_roles = [\"admin\"]\n[[route]]\npath = \"/\"\nallow_any_user = true\n";
const OPS_ONLY: &str = "roles = [\"admin\", \"ops\"]\n[[route]]\npath = \"/admin/\"\nallow_roles = [\"ops\"]\n[[route]]\npath = \"/\"\nallow_any_user = true\n";

async fn status(gate: &Gate, session: &Session, path: &str) -> u16 {
    gate.get(
        path,
        &[
            ("cookie", &session.cookie()),
            ("accept", "application/json"),
        ],
    )
    .await
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_3_sighup_swaps_the_policy_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tapgate.toml"), ADMINS).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let demo = Demo::start(dir.path(), port);
    let invite = demo
        .wait_line("the invite URL", |l| {
            l.contains("/.tapgate/register?invite=")
        })
        .await;
    let gate = Gate::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let mut key = SoftKey::new();
    let session = gate.register(&mut key, &invite_token(&invite)).await;
    assert_eq!(
        status(&gate, &session, "/admin/x").await,
        200,
        "the demo's first user is an admin"
    );

    // A valid new file: in force without a restart (the session is the same).
    std::fs::write(dir.path().join("tapgate.toml"), OPS_ONLY).unwrap();
    demo.hup();
    let ev = demo.reloaded(0, "success").await;
    assert!(ev["reason"].as_str().unwrap().contains("2 route"), "{ev}");
    assert_eq!(status(&gate, &session, "/admin/x").await, 403);
    assert_eq!(status(&gate, &session, "/docs").await, 200);

    // A broken file: refused, the policy in force stays.
    std::fs::write(
        dir.path().join("tapgate.toml"),
        "[[route]]\npath = \"admin\"\n",
    )
    .unwrap();
    demo.hup();
    let ev = demo.reloaded(1, "failure").await;
    assert!(
        ev["reason"].as_str().unwrap().contains("route[0].path"),
        "the failure names the key: {ev}"
    );
    assert_eq!(
        status(&gate, &session, "/admin/x").await,
        403,
        "still the ops-only policy"
    );
    assert_eq!(status(&gate, &session, "/docs").await, 200, "still serving");
}
