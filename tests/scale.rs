//! Issue 5: three real `tapgate serve` processes share one PostgreSQL
//! schema and one signing key behind a loopback round-robin. A ceremony
//! begun on one finishes on another, a login replayed to all wins exactly
//! once, a revocation on one is refused on the others within 2 s (pushed
//! by LISTEN/NOTIFY), and a database outage (a TCP relay between tapgate
//! and PostgreSQL, cut and restored: the shared server itself is never
//! stopped) keeps signed-in traffic at 200 throughout while new ceremonies
//! get 503 `store-unavailable`, recovering with no restart. Afterwards the
//! database holds every audit event every instance logged, the outage's
//! included, in one gap-free order. Skips (SKIP line) without PostgreSQL
//! unless `TAPGATE_REQUIRE_POSTGRES=1`.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `tapgate serve` child, killed on drop; its output goes to
/// `DIR/NAME.log`.
fn start_instance(dir: &Path, name: &str, config: &Path, port: u16) -> Logged {
    let mut c = tapgate(dir);
    c.arg("serve")
        .arg("--config")
        .arg(config)
        .env("TAPGATE_LISTEN", format!("127.0.0.1:{port}"))
        // One key signs in dozens of times in seconds here; the rate
        // limits have their own tests (tests/abuse.rs).
        .env("TAPGATE_LIMITS__ENABLED", "false");
    Logged::spawn(c, &dir.join(format!("{name}.log")))
}

/// Both instances as one public origin (`http://localhost:PORT_A`, the
/// load balancer's), requests sent round-robin.
struct RoundRobin {
    gates: Vec<Gate>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn pick(&self) -> &Gate {
        &self.gates[self.next.fetch_add(1, Ordering::Relaxed) % self.gates.len()]
    }
}

async fn wait_instance_healthy(gate: &Gate, inst: &Logged) {
    let (within, poll) = (Duration::from_secs(30), Duration::from_millis(50));
    wait_healthy(gate, within, poll, "instance", || {
        format!(":\n{}", inst.log())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_5_three_processes_share_one_postgresql() {
    let Some(schema) = PgSchema::create("tg_scale").await else {
        return;
    };
    let outcome = tokio::spawn(scenario(schema.base.clone(), schema.name.clone())).await;
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(base: String, schema: String) {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let upstream = Upstream::start().await;

    // tapgate reaches PostgreSQL only through the relay.
    let pg = url::Url::parse(&base).unwrap();
    let target = (
        pg.host_str().unwrap_or("127.0.0.1").to_owned(),
        pg.port().unwrap_or(5432),
    );
    let relay = Relay::start(0, target.clone()).await;
    let mut via = pg.clone();
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(relay.port)).unwrap();
    via.query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"))
        .append_pair("pool_max", "4");

    write_signing_key(&d.join("signing-key.pem"));
    let (pa, pb) = (free_port(), free_port());
    let public = format!("http://localhost:{pa}");
    let config = d.join("tapgate.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"{public}\"\nupstream = \"{}\"\n[store]\nurl = \"{via}\"\n\
             [keys]\nsigning_key_file = \"{}\"\n",
            upstream.url(),
            d.join("signing-key.pem").display()
        ),
    )
    .unwrap();
    let pc = free_port();
    // All start at once: the migrations' advisory lock serialises them.
    let ia = start_instance(d, "a", &config, pa);
    let ib = start_instance(d, "b", &config, pb);
    let ic = start_instance(d, "c", &config, pc);
    let gate = |port: u16| {
        let mut g = Gate::new(SocketAddr::from(([127, 0, 0, 1], port)));
        g.origin = public.clone();
        g
    };
    let (a, b, c) = (gate(pa), gate(pb), gate(pc));
    wait_instance_healthy(&a, &ia).await;
    wait_instance_healthy(&b, &ib).await;
    wait_instance_healthy(&c, &ic).await;
    let rr = RoundRobin {
        gates: vec![a.clone(), b.clone(), c.clone()],
        next: AtomicUsize::new(0),
    };

    // An invite from the operator's CLI, against the same database.
    // Blocking: off the runtime's workers, which carry the relay.
    let mut cmd = Command::new(BIN);
    cmd.current_dir(d)
        .args([
            "admin",
            "invite",
            "--email",
            "ann@example.com",
            "--role",
            "member",
        ])
        .arg("--config")
        .arg(&config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{out:?}\nA:\n{}\nB:\n{}",
        ia.log(),
        ib.log()
    );
    let invite = invite_token(String::from_utf8_lossy(&out.stdout).trim());

    // Registration begun on A finishes on B.
    let mut key = SoftKey::new();
    let opts = a.register_options(&invite).await;
    let cred = key
        .create(&public, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = b
        .register_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await;
    reply.ok_json();
    // The invite used on B is gone on A.
    let r = a
        .post(
            "/.tapgate/api/register/options",
            &json!({ "invite": invite }),
        )
        .await;
    assert!(r.status.is_client_error(), "{}: {}", r.status, r.text());

    // Login begun on B finishes on A.
    let opts = b.login_options(&json!({})).await;
    let cred = key
        .get(&public, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = a
        .login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await;
    reply.ok_json();
    let s1 = Session {
        token: reply.cookie("tapgate_session").unwrap(),
        body: reply.json(),
        cookie_name: "tapgate_session".into(),
    };
    for _ in 0..4 {
        assert_eq!(rr.pick().get_as("/app", &s1).await.status, 200);
    }

    // 30 concurrent replays of one login, round-robin: exactly one wins.
    let opts = rr.pick().login_options(&json!({})).await;
    let cred = key
        .get(&public, &opts["publicKey"], &ClientData::default())
        .await;
    let ceremony = opts["ceremony"].as_str().unwrap().to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let g = rr.gates[i % 3].clone();
        let (cred, ceremony) = (cred.clone(), ceremony.clone());
        tasks.spawn(async move { g.login_verify(&cred, &ceremony).await });
    }
    let mut statuses = Vec::new();
    let mut s2 = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        if r.status == 200 {
            s2 = Some(Session {
                token: r.cookie("tapgate_session").unwrap(),
                body: r.json(),
                cookie_name: "tapgate_session".into(),
            });
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || (400..500).contains(s)),
        "{statuses:?}"
    );
    let s2 = s2.unwrap();

    // Sign out everywhere on A: B and C refuse the session within 2 s.
    let started = Instant::now();
    a.post_as("/.tapgate/api/account/sessions/revoke", &json!({}), &s1)
        .await
        .ok_json();
    let answered = started.elapsed();
    let refused_on = |g: Gate, s2: Session| async move {
        let (limit, poll) = (Duration::from_secs(2), Duration::from_millis(5));
        refused_since(&g, &s2, started, limit, poll).await
    };
    let (on_b, on_c) = tokio::join!(refused_on(b.clone(), s2.clone()), refused_on(c.clone(), s2));
    println!(
        "revocation propagation across processes: refused on B {on_b:?} and on C {on_c:?} after \
         the request to A began (A answered after {answered:?})"
    );
    assert!(on_b < Duration::from_secs(2) && on_c < Duration::from_secs(2));

    // A fresh session for the outage.
    let s3 = rr.pick().login(&mut key).await;

    // Signed-in traffic on every instance, all through the outage and the
    // recovery: not one request may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (gates, s3, stop) = (rr.gates.clone(), s3.clone(), stop.clone());
        tokio::spawn(async move {
            let mut served = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for g in &gates {
                    let r = g.get_as("/app", &s3).await;
                    assert_eq!(r.status, 200, "signed-in request failed: {}", r.text());
                    served += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            served
        })
    };

    // Database outage: signed-in traffic goes on, ceremonies get 503.
    let port = relay.cut().await;
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for g in &rr.gates {
        let opts = g.login_options(&json!({})).await;
        let cred = key
            .get(&public, &opts["publicKey"], &ClientData::default())
            .await;
        let asked = Instant::now();
        g.login_verify(&cred, opts["ceremony"].as_str().unwrap())
            .await
            .assert_error(503, "store-unavailable");
        println!("outage: login refused with 503 in {:?}", asked.elapsed());
    }
    while cut_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Restored: ceremonies work again on every instance, no restart.
    let relay = Relay::start(port, target).await;
    let restored = Instant::now();
    for g in &rr.gates {
        loop {
            let opts = g.login_options(&json!({})).await;
            let cred = key
                .get(&public, &opts["publicKey"], &ClientData::default())
                .await;
            let r = g
                .login_verify(&cred, opts["ceremony"].as_str().unwrap())
                .await;
            if r.status == 200 {
                break;
            }
            r.assert_error(503, "store-unavailable");
            assert!(
                restored.elapsed() < Duration::from_secs(15),
                "no recovery within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "recovered: every instance signs in {:?} after the database returned",
        restored.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let served = traffic.await.unwrap();
    println!("outage and recovery: {served} signed-in requests served, all 200");

    // Every audit event every instance logged (the outage's refusals
    // included) reaches the one record, in one gap-free order.
    let logged = |inst: &Logged| -> Vec<String> {
        inst.log()
            .lines()
            .filter(|l| l.starts_with('{') && l.contains(r#""log_type":"audit""#))
            .map(str::to_owned)
            .collect()
    };
    let mut db = sqlx::PgConnection::connect(&format!(
        "{base}{}options=-c%20search_path%3D{schema}",
        if base.contains('?') { '&' } else { '?' }
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (stored, expected) = loop {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, instance, record FROM audit_events ORDER BY seq")
                .fetch_all(&mut db)
                .await
                .unwrap();
        let expected: Vec<String> = [&ia, &ib, &ic].into_iter().flat_map(logged).collect();
        let stored: std::collections::HashSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        if expected.iter().all(|e| stored.contains(e.as_str())) {
            break (rows, expected);
        }
        assert!(
            Instant::now() < deadline,
            "{} logged audit events missing from the database after 15 s",
            expected
                .iter()
                .filter(|e| !stored.contains(e.as_str()))
                .count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (i, row) in stored.iter().enumerate() {
        assert_eq!(row.0, i as i64 + 1, "gap-free");
    }
    let instances: std::collections::HashSet<&str> = stored.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        instances.len(),
        4,
        "three instances and the CLI: {instances:?}"
    );
    let refusals = stored
        .iter()
        .filter(|r| r.2.contains("store") && r.2.contains(r#""outcome":"failure""#))
        .count();
    assert!(refusals >= 3, "the outage's refused logins are recorded");
    println!(
        "audit: {} events from {} writers in one record ({} logged by the instances), {refusals} from the outage",
        stored.len(),
        instances.len(),
        expected.len()
    );
    drop((ia, ib, ic));
    relay.cut().await;
}
