//! The real binary (`tapgate demo`, `admin …`, `check`) in a temporary
//! working directory. Children are always killed (guard), every wait is
//! bounded. The demo is also where the audit lines are checked: they are
//! JSON on the process's stdout.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn is_invite_line(line: &str, port: u16) -> bool {
    let prefix = format!("http://localhost:{port}/.tapgate/register?invite=");
    line.strip_prefix(&prefix)
        .is_some_and(|t| !t.is_empty() && !t.chars().any(char::is_whitespace))
}

async fn wait_demo_healthy(gate: &Gate) {
    let (within, poll) = (Duration::from_secs(20), Duration::from_millis(50));
    wait_healthy(gate, within, poll, "demo", String::new).await;
}

fn check_audit_common(ev: &Value) {
    for field in [
        "time",
        "severity",
        "message",
        "instance",
        "ip",
        "request_id",
    ] {
        assert!(
            ev[field].as_str().is_some_and(|s| !s.is_empty()),
            "audit event lacks {field}: {ev}"
        );
    }
    assert_eq!(ev["ip"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_an_invite_guards_the_upstream_and_audits_every_ceremony() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    let port = free_port();
    let mut demo = tapgate(dir.path());
    demo.arg("demo")
        .env("PORT", port.to_string())
        .env("TAPGATE_UPSTREAM", upstream.url());
    let mut demo = Running::spawn(demo);

    // The invite URL, alone on its line.
    let invite_url = demo
        .wait_line(30, "the invite URL", |l| is_invite_line(l, port))
        .await;
    let gate = Gate::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    wait_demo_healthy(&gate).await;
    let r = gate.get("/.tapgate/healthz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert!(
        dir.path().join("tapgate-data").is_dir(),
        "state lives in ./tapgate-data/"
    );

    // WebAuthn needs the host name: 127.0.0.1 is sent to localhost.
    let r = gate
        .send(gate.http.get(format!("http://127.0.0.1:{port}/x?y=1")))
        .await;
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("http://localhost:{port}/x?y=1").as_str())
    );

    // Register from the printed invite; the session reaches our upstream.
    let mut admin_key = SoftKey::new();
    let session = gate
        .register(&mut admin_key, &invite_token(&invite_url))
        .await;
    let r = gate.get("/x?y=1", &[("cookie", &session.cookie())]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["upstream"],
        "test",
        "TAPGATE_UPSTREAM is the upstream"
    );
    let seen = upstream.one("/x?y=1");
    assert_eq!(
        seen.header("x-tapgate-email"),
        Some("admin@localhost.localdomain")
    );
    assert_eq!(seen.header("x-tapgate-roles"), Some("admin"));
    let ev = demo
        .audit_event(&[("event", "registration"), ("outcome", "success")])
        .await;
    check_audit_common(&ev);
    assert_eq!(ev["subject"], session.body["subject"]);
    assert_eq!(ev["email"], "admin@localhost.localdomain");
    assert_eq!(ev["severity"], "NOTICE");

    // A failed sign-in (the answer comes from another origin): one line
    // with its reason and the request id the client was shown.
    let opts = gate.login_options(&json!({})).await;
    let bad = admin_key
        .get(
            &gate.origin,
            &opts["publicKey"],
            &ClientData {
                origin: Some("https://evil.example".into()),
                ..Default::default()
            },
        )
        .await;
    let reply = gate
        .login_verify(&bad, opts["ceremony"].as_str().unwrap())
        .await;
    let err = reply.assert_error(400, "origin-mismatch");
    let ev = demo
        .audit_event(&[
            ("event", "login"),
            ("outcome", "failure"),
            ("reason", "origin-mismatch"),
        ])
        .await;
    check_audit_common(&ev);
    assert_eq!(
        ev["request_id"], err["request_id"],
        "same request id in reply and audit"
    );
    assert_eq!(ev["severity"], "WARNING");
    assert_eq!(ev["subject"], session.body["subject"]);

    // A successful sign-in.
    let login = gate.login(&mut admin_key).await;
    let ev = demo
        .audit_event(&[("event", "login"), ("outcome", "success")])
        .await;
    check_audit_common(&ev);
    assert_eq!(ev["subject"], login.body["subject"]);

    // `admin invite` in the same directory, while the demo runs: one URL
    // line on stdout, usable right away.
    let mut c = tapgate(dir.path());
    c.args([
        "admin",
        "invite",
        "--email",
        "e@example.com",
        "--role",
        "member",
    ])
    .env("PORT", port.to_string());
    let out = run_bounded(c);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    assert!(is_invite_line(lines[0], port), "{}", lines[0]);

    // A failed registration (no user verification), then a good one.
    let token = invite_token(lines[0]);
    let opts = gate.register_options(&token).await;
    let cred = SoftKey::without_uv()
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.register_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(400, "user-not-verified");
    let ev = demo
        .audit_event(&[
            ("event", "registration"),
            ("outcome", "failure"),
            ("reason", "user-not-verified"),
        ])
        .await;
    check_audit_common(&ev);
    assert_eq!(ev["email"], "e@example.com");
    let member = gate.register(&mut SoftKey::new(), &token).await;
    assert_eq!(member.body["email"], "e@example.com");
    demo.audit_event(&[
        ("event", "registration"),
        ("outcome", "success"),
        ("email", "e@example.com"),
    ])
    .await;

    // Restart in the same directory: no new invite, and the signing key
    // was kept, so the session still works.
    drop(demo);
    let mut again = tapgate(dir.path());
    again
        .arg("demo")
        .env("PORT", port.to_string())
        .env("TAPGATE_UPSTREAM", upstream.url());
    let mut again = Running::spawn(again);
    again
        .wait_line(30, "the sign-in hint", |l| l.starts_with("Sign in at "))
        .await;
    assert!(!again.lines().iter().any(|l| is_invite_line(l, port)));
    wait_demo_healthy(&gate).await;
    let r = gate
        .get("/after-restart", &[("cookie", &session.cookie())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn admin_invite_refuses_bad_arguments_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "admin",
            "invite",
            "--email",
            "not-an-email",
            "--role",
            "member",
        ][..],
        &[
            "admin",
            "invite",
            "--email",
            "e@example.com",
            "--role",
            "Bad Role",
        ],
        &[
            "admin",
            "invite",
            "--email",
            "e@example.com",
            "--role",
            "member",
            "--ttl",
            "1s",
        ],
        &["admin", "invite", "--email", "e@example.com"],
    ] {
        let mut c = tapgate(dir.path());
        c.args(args);
        let out = run_bounded(c);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn check_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"
public_url = "http://app.example.com"
upstream = "ftp://files.example.com"
[session]
ttl = "forever"
[assertion]
ttl = "10m"
[webauthn]
user_verification = "sometimes"
challenge_ttl = "1s"
[[route]]
path = "admin"
allow_roles = ["admin"]
[[route]]
path = "/x"
allow_roles = ["Bad Role"]
[[route]]
path = "/y"
"#,
    )
    .unwrap();
    let mut c = tapgate(dir.path());
    c.args(["check", "--config", "bad.toml"]);
    let out = run_bounded(c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in [
        "public_url",
        "upstream",
        "session.ttl",
        "assertion.ttl",
        "store.url",
        "keys.signing_key_file",
        "webauthn.user_verification",
        "webauthn.challenge_ttl",
        "route[0].path",
        "route[1].allow_roles",
        "route[2].allow_roles",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key}: "))),
            "{key} not named on stderr:\n{stderr}"
        );
    }

    // A misspelt section is an error too, never silently ignored.
    std::fs::write(dir.path().join("typo.toml"), "[sesion]\nttl = \"1h\"\n").unwrap();
    let mut c = tapgate(dir.path());
    c.args(["check", "--config", "typo.toml"]);
    let out = run_bounded(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sesion"));

    // A missing file.
    let mut c = tapgate(dir.path());
    c.args(["check", "--config", "missing.toml"]);
    assert_eq!(run_bounded(c).status.code(), Some(2));
}

#[test]
fn check_accepts_a_good_config_and_env_overrides_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        tapgate::token::SigningKey::generate_pem(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.toml"),
        r#"
public_url = "https://app.example.com"
upstream = "http://127.0.0.1:8081"
[session]
ttl = "8h"
[assertion]
audience = "https://api.example.com"
[store]
url = "sqlite://data/tapgate.db"
[keys]
signing_key_file = "key.pem"
[webauthn]
challenge_ttl = "10s"
[[route]]
path = "/admin/"
allow_roles = ["admin"]
max_auth_age = "5m"
[[route]]
path = "/"
allow_roles = ["member", "admin"]
"#,
    )
    .unwrap();
    let mut c = tapgate(dir.path());
    c.args(["check", "--config", "good.toml"]);
    let out = run_bounded(c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("https://app.example.com"), "{stdout}");

    // TAPGATE_SECTION__KEY overrides the file, and is checked the same way.
    let mut c = tapgate(dir.path());
    c.args(["check", "--config", "good.toml"])
        .env("TAPGATE_SESSION__TTL", "forever");
    let out = run_bounded(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("session.ttl: "));
}

/// `tapgate admin ARGS… --json` in `dir` (the demo's defaults, PORT set):
/// the parsed stdout, asserting exit 0.
fn admin_json(dir: &Path, port: u16, args: &[&str]) -> Value {
    let out = admin_out(dir, port, args, true);
    assert!(
        out.status.success(),
        "tapgate admin {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "admin {args:?} --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn admin_out(dir: &Path, port: u16, args: &[&str], json: bool) -> Output {
    let mut c = tapgate(dir);
    c.arg("admin").args(args).env("PORT", port.to_string());
    if json {
        c.arg("--json");
    }
    run_bounded(c)
}

/// The audit lines an admin command printed on stderr.
fn cli_audit(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["log_type"] == "audit")
        .collect()
}

/// GET /app with `session` until the demo refuses it; at most 2 s.
async fn refused_within_2s(gate: &Gate, session: &Session) -> Duration {
    let (limit, poll) = (Duration::from_secs(2), Duration::from_millis(25));
    refused_since(gate, session, Instant::now(), limit, poll).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_4_the_admin_cli_runs_the_whole_key_lifecycle_against_a_running_demo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start().await;
    let port = free_port();
    let mut demo = tapgate(dir.path());
    demo.arg("demo")
        .env("PORT", port.to_string())
        .env("TAPGATE_UPSTREAM", upstream.url());
    let mut demo = Running::spawn(demo);
    let invite_url = demo
        .wait_line(30, "the invite URL", |l| is_invite_line(l, port))
        .await;
    let gate = Gate::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    wait_demo_healthy(&gate).await;
    gate.register(&mut SoftKey::new(), &invite_token(&invite_url))
        .await;
    let d = dir.path();

    // invites create: the URL alone on stdout (text), or JSON.
    let made = admin_json(
        d,
        port,
        &[
            "invites",
            "create",
            "--email",
            "Ann@Example.com",
            "--role",
            "member",
            "--ttl",
            "2h",
        ],
    );
    assert_eq!(made["email"], "ann@example.com");
    let mut ann_key = SoftKey::new();
    let ann = gate
        .register(&mut ann_key, &invite_token(made["url"].as_str().unwrap()))
        .await;
    let subject = ann.body["subject"].as_str().unwrap().to_owned();

    // users list / show, keys list.
    let users = admin_json(d, port, &["users", "list"]);
    assert_eq!(
        users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["admin@localhost.localdomain", "ann@example.com"]
    );
    let show = admin_json(d, port, &["users", "show", "ann@example.com"]);
    assert_eq!(show["subject"], subject.as_str());
    assert_eq!(show["active_keys"], 1);
    let digest = show["keys"][0]["digest"].as_str().unwrap().to_owned();
    let text = admin_out(d, port, &["keys", "list", "ann@example.com"], false);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("KEY "), "{text}");
    assert!(
        text.contains(&digest) && text.contains("test key") && text.contains("active"),
        "{text}"
    );
    let text = admin_out(d, port, &["users", "list"], false);
    let text = String::from_utf8(text.stdout).unwrap();
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("ann@"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "ann@example.com",
            "member",
            "1/1",
            "active",
            subject.as_str()
        ],
        "{text}"
    );

    // roles grant: sessions continue; roles revoke: they end.
    let r = admin_json(d, port, &["roles", "grant", "ann@example.com", "ops"]);
    assert_eq!(r["roles"], json!(["member", "ops"]));
    let out = admin_out(
        d,
        port,
        &["roles", "revoke", "ann@example.com", "member"],
        false,
    );
    assert!(out.status.success());
    let ev = &cli_audit(&out)[0];
    assert_eq!(ev["event"], "role_revoked");
    assert_eq!(ev["actor"], "cli");
    assert_eq!(ev["subject"], subject.as_str());
    assert_eq!(ev["detail"], "role member");
    let took = refused_within_2s(&gate, &ann).await;
    println!("CLI role revoke reached the running demo in {took:?}");

    // sessions revoke.
    let ann = gate.login(&mut ann_key).await;
    assert_eq!(jwt_payload(&ann.token)["roles"], json!(["ops"]));
    let r = admin_json(d, port, &["sessions", "revoke", "ann@example.com"]);
    assert!(r["epoch"].as_u64().unwrap() >= 2);
    let took = refused_within_2s(&gate, &ann).await;
    println!("CLI sessions revoke reached the running demo in {took:?}");

    // users disable / enable.
    let ann = gate.login(&mut ann_key).await;
    let r = admin_json(d, port, &["users", "disable", "ann@example.com"]);
    assert_eq!(
        (r["disabled"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true))
    );
    let took = refused_within_2s(&gate, &ann).await;
    println!("CLI disable reached the running demo in {took:?}");
    let opts = gate.login_options(&json!({})).await;
    let cred = ann_key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(403, "user-disabled");
    admin_json(d, port, &["users", "enable", "ann@example.com"]);
    let ann = gate.login(&mut ann_key).await;

    // Recovery: a new key for the same identity, the lost one revoked.
    let rec = admin_json(
        d,
        port,
        &[
            "invites",
            "create",
            "--recover",
            "ann@example.com",
            "--revoke-other-keys",
        ],
    );
    assert_eq!(rec["recovery_for"], subject.as_str());
    let mut new_key = SoftKey::new();
    let recovered = gate
        .register(&mut new_key, &invite_token(rec["url"].as_str().unwrap()))
        .await;
    assert_eq!(recovered.body["subject"], subject.as_str());
    refused_within_2s(&gate, &ann).await;
    let keys = admin_json(d, port, &["keys", "list", "ann@example.com"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let old = keys
        .iter()
        .find(|k| k["digest"] == digest.as_str())
        .unwrap();
    assert!(old["revoked"].is_u64(), "{old}");
    let new_digest = keys.iter().find(|k| k["revoked"].is_null()).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // keys revoke: the last key only with --allow-last-key.
    let out = admin_out(d, port, &["keys", "revoke", &new_digest], false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow-last-key") && err.contains("--recover"),
        "{err}"
    );
    let r = admin_json(
        d,
        port,
        &["keys", "revoke", &new_digest, "--allow-last-key"],
    );
    assert_eq!(r["changed"], true);
    refused_within_2s(&gate, &recovered).await;

    // invites list / cancel by a prefix of the id.
    let made = admin_json(
        d,
        port,
        &[
            "invites",
            "create",
            "--email",
            "bob@example.com",
            "--role",
            "member",
        ],
    );
    let pending = admin_json(d, port, &["invites", "list"]);
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "pending")
    );
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == made["id"])
    );
    let short = made["short_id"].as_str().unwrap();
    let r = admin_json(d, port, &["invites", "cancel", short]);
    assert_eq!(r["state"], "cancelled");
    gate.post(
        "/.tapgate/api/register/options",
        &json!({ "invite": invite_token(made["url"].as_str().unwrap()) }),
    )
    .await
    .assert_error(400, "invite-invalid");
    let all = admin_json(d, port, &["invites", "list", "--all"]);
    let states: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"cancelled") && states.contains(&"used"),
        "{states:?}"
    );
    let out = admin_out(d, port, &["invites", "cancel", short], false);
    assert_eq!(out.status.code(), Some(1));

    // Exit codes: unknown user 1, bad usage 2 (before touching the store).
    for (args, code) in [
        (&["users", "show", "nobody@example.com"][..], 1),
        (&["keys", "revoke", "no-such-key"], 1),
        (&["users", "show", "not-an-email"], 2),
        (&["roles", "grant", "ann@example.com", "Bad Role"], 2),
        (&["invites", "create", "--email", "x@example.com"], 2),
        (
            &[
                "invites",
                "create",
                "--recover",
                "ann@example.com",
                "--role",
                "x",
            ],
            2,
        ),
        (
            &[
                "invites",
                "create",
                "--email",
                "x@example.com",
                "--revoke-other-keys",
            ],
            2,
        ),
        (&["users", "frobnicate"], 2),
    ] {
        let out = admin_out(d, port, args, false);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[tokio::test]
async fn issue_4_the_admin_cli_works_against_postgresql() {
    let Some(schema) = PgSchema::create("tg_cli").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(dir.path(), "tapgate.toml", &schema.url());
    let cfg = config.to_str().unwrap();
    let admin_pg = |args: &[&str]| {
        let mut c = tapgate(dir.path());
        c.arg("admin").args(args).args(["--config", cfg, "--json"]);
        run_bounded(c)
    };
    let out = admin_pg(&[
        "invites",
        "create",
        "--email",
        "pg@example.com",
        "--role",
        "member",
    ]);
    let outcome = std::panic::catch_unwind(|| {
        assert!(out.status.success(), "{out:?}");
        let made: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            made["url"]
                .as_str()
                .unwrap()
                .starts_with("https://app.example.com/.tapgate/register?invite=")
        );
        let out = admin_pg(&["invites", "list"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list[0]["email"], "pg@example.com");
        let out = admin_pg(&["users", "list"]);
        assert_eq!(
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            json!([])
        );
        let out = admin_pg(&["invites", "cancel", made["short_id"].as_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let out = admin_pg(&["users", "disable", "nobody@example.com"]);
        assert_eq!(out.status.code(), Some(1));
    });
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// `tapgate admin ARGS… --config CONFIG` with `stdin` fed in; at most 30 s.
fn admin_with_stdin(dir: &Path, config: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut c = tapgate(dir);
    c.arg("admin")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn tapgate");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("feed stdin");
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tapgate admin {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn store_config(dir: &Path, name: &str, url: &str) -> std::path::PathBuf {
    let config = dir.join(name);
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://app.example.com\"\nupstream = \"http://127.0.0.1:9\"\n\
             [store]\nurl = \"{url}\"\n[keys]\nsigning_key_file = \"/unused\"\n"
        ),
    )
    .unwrap();
    config
}

/// Demo to production and back: SQLite → PostgreSQL → SQLite through
/// `admin export` / `admin import`, the JSON identical at every step;
/// `migrate` prints the schema version; a non-empty target is refused
/// without --force and replaced (all of it) with it.
#[tokio::test]
async fn issue_5_export_import_round_trips_sqlite_postgresql_sqlite() {
    use tapgate::model::{CredentialId, Email, Role, Subject};
    use tapgate::store::{CredentialRecord, InviteRecord, SqliteStore, Store, UserRecord};
    let Some(schema) = PgSchema::create("tg_export").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = store_config(d, "pg.toml", &schema.url());
    let demo_db = d.join("demo.db");
    let lite = store_config(d, "lite.toml", &format!("sqlite://{}", demo_db.display()));
    let back = store_config(
        d,
        "back.toml",
        &format!("sqlite://{}", d.join("back.db").display()),
    );

    // The demo's state, written through the library: a user with a
    // hardware key (attestation root, counter) and a revoked passkey, a
    // used, a cancelled and a pending invite, revocation entries.
    {
        let s = SqliteStore::open(&format!("sqlite://{}", demo_db.display()))
            .await
            .unwrap();
        let role = |r: &str| Role::parse(r).unwrap();
        s.create_invite(&InviteRecord::new(
            "h_ann".into(),
            Email::parse("ann@example.com").unwrap(),
            vec![role("admin")],
            100,
            u64::MAX / 4,
            "demo",
        ))
        .await
        .unwrap();
        let ann = UserRecord {
            subject: Subject("u_ann".into()),
            email: Email::parse("ann@example.com").unwrap(),
            display_name: "Ann".into(),
            roles: vec![role("admin")],
            disabled: false,
            created: 200,
        };
        let key = |id: &[u8], root: Option<String>| CredentialRecord {
            id: CredentialId(id.to_vec()),
            subject: ann.subject.clone(),
            public_key: vec![0xa5, 1, 2, 3, 0],
            alg: -7,
            sign_count: 0,
            aaguid: "2fc0579f-8113-47ea-b116-bb5a8db9202a".into(),
            transports: vec!["usb".into()],
            backup_eligible: root.is_none(),
            backup_state: false,
            attestation_fmt: if root.is_some() { "packed" } else { "none" }.into(),
            attested: root.is_some(),
            nickname: "key".into(),
            created: 200,
            last_used: None,
            revoked: None,
            attestation_root: root,
        };
        s.register_with_invite("h_ann", &ann, &key(b"\x00hw", Some("cd".repeat(32))), 200)
            .await
            .unwrap();
        s.record_use(&CredentialId(b"\x00hw".to_vec()), 4_000_000_000, false, 300)
            .await
            .unwrap();
        s.add_credential(&key(b"phone", None)).await.unwrap();
        s.revoke_credential(&ann.subject, &CredentialId(b"phone".to_vec()), false, 400)
            .await
            .unwrap();
        s.revoke_sessions(&ann.subject, 500).await.unwrap();
        for (h, e) in [("h_bob", "bob@example.com"), ("h_cy", "cy@example.com")] {
            s.create_invite(&InviteRecord::new(
                h.into(),
                Email::parse(e).unwrap(),
                vec![role("member")],
                600,
                u64::MAX / 4,
                "cli",
            ))
            .await
            .unwrap();
        }
        s.cancel_invite("h_cy", 700).await.unwrap();
    }

    let outcome = std::panic::catch_unwind(|| {
        let ok = |out: Output, what: &str| {
            assert!(
                out.status.success(),
                "{what}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let mut migrate = tapgate(d);
        migrate.arg("migrate").arg("--config").arg(&pg);
        let out = ok(run_bounded(migrate), "migrate");
        assert_eq!(String::from_utf8_lossy(&out).trim(), "schema version 3");

        let from_lite = ok(
            admin_with_stdin(d, &lite, &["export"], b""),
            "export sqlite",
        );
        let snap: Value = serde_json::from_slice(&from_lite).unwrap();
        assert_eq!(snap["users"].as_array().unwrap().len(), 1);
        assert_eq!(snap["credentials"].as_array().unwrap().len(), 2);
        assert_eq!(snap["invites"].as_array().unwrap().len(), 3);
        assert_eq!(snap["revocations"].as_array().unwrap().len(), 2);
        assert_eq!(snap["users"][0]["epoch"], 1);

        let imported = admin_with_stdin(d, &pg, &["import"], &from_lite);
        let audit = cli_audit(&imported);
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0]["event"], "state_imported");
        assert_eq!(audit[0]["outcome"], "success");
        assert_eq!(audit[0]["actor"], "cli");
        ok(imported, "import pg");
        // The state without the audit record, and the record.
        let split = |doc: &[u8]| -> (Value, Vec<Value>) {
            let mut v: Value = serde_json::from_slice(doc).unwrap();
            let audit = v.as_object_mut().unwrap().remove("audit").unwrap();
            (v, audit.as_array().unwrap().clone())
        };
        let from_pg = ok(admin_with_stdin(d, &pg, &["export"], b""), "export pg");
        let (lite_state, lite_audit) = split(&from_lite);
        let (pg_state, pg_audit) = split(&from_pg);
        assert_eq!(pg_state, lite_state);
        // The audit record moves with the state (every event as it was),
        // and the import itself is recorded after it.
        assert_eq!(pg_audit[..lite_audit.len()], lite_audit[..]);
        assert_eq!(pg_audit.len(), lite_audit.len() + 1, "{pg_audit:?}");
        assert_eq!(pg_audit.last().unwrap()["event"], "state_imported");
        // What the operator sees agrees too.
        let users = ok(
            admin_with_stdin(d, &pg, &["users", "list", "--json"], b""),
            "users list",
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&users).unwrap()[0]["email"],
            "ann@example.com"
        );

        // Not into a non-empty store without --force (exit 1, untouched).
        let refused = admin_with_stdin(d, &pg, &["import"], &from_lite);
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
        assert_eq!(cli_audit(&refused)[0]["outcome"], "failure");
        // Not a state export: exit 2.
        let bad = admin_with_stdin(d, &pg, &["import", "--force"], b"{\"users\": []}");
        assert_eq!(bad.status.code(), Some(2));
        let (again_state, again_audit) =
            split(&ok(admin_with_stdin(d, &pg, &["export"], b""), "export pg"));
        assert_eq!(again_state, pg_state, "the refusals changed nothing");
        // ... but they are recorded: the export, the refused import.
        let later: Vec<_> = again_audit[pg_audit.len()..]
            .iter()
            .map(|e| (e["event"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
            .collect();
        assert!(later.contains(&("state_imported", "failure")), "{later:?}");

        ok(
            admin_with_stdin(d, &back, &["import"], &from_pg),
            "import back",
        );
        let from_back = ok(admin_with_stdin(d, &back, &["export"], b""), "export back");
        let (back_state, back_audit) = split(&from_back);
        assert_eq!(back_state, lite_state);
        assert_eq!(back_audit[..pg_audit.len()], pg_audit[..]);
        assert_eq!(back_audit.last().unwrap()["event"], "state_imported");

        // --force replaces all of it.
        let mut one: Value = snap.clone();
        one["invites"] = json!([]);
        let one = serde_json::to_vec(&one).unwrap();
        ok(
            admin_with_stdin(d, &back, &["import", "--force"], &one),
            "import --force",
        );
        let replaced: Value = serde_json::from_slice(&ok(
            admin_with_stdin(d, &back, &["export"], b""),
            "export back",
        ))
        .unwrap();
        assert_eq!(replaced["invites"], json!([]));
        assert_eq!(replaced["users"], snap["users"]);
    });
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
