//! Issue 7, part 3 ("Abuse"): rate limits on the ceremony endpoints, what
//! an unfinished ceremony costs the server, and the size bounds on request
//! headers and bodies.
//!
//! The limit tests run the real serving stack in-process ([`TestGate`])
//! with a `[limits]` section of their own (the harness turns limits off for
//! the other suites). The size tests also run the real binary (`tapgate
//! demo`): its command line and configuration, not only its serve loop.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const LOGIN_OPTIONS: &str = "/.tapgate/api/login/options";
const LOGIN_VERIFY: &str = "/.tapgate/api/login/verify";
const REGISTER_OPTIONS: &str = "/.tapgate/api/register/options";
const REGISTER_VERIFY: &str = "/.tapgate/api/register/verify";

/// A `[limits]` section: (per minute, burst) per address and per account.
fn limits(ip: (u32, u32), account: (u32, u32)) -> String {
    format!(
        "[limits]\nip_per_minute = {}\nip_burst = {}\naccount_per_minute = {}\naccount_burst = {}\n",
        ip.0, ip.1, account.0, account.1
    )
}

/// Limits that never get in the way of the other limit under test.
const PLENTY: (u32, u32) = (100_000, 10_000);

/// Assert a 429 `rate-limited` in the house shape; its `Retry-After`.
fn assert_limited(reply: &Reply) -> u64 {
    let v = reply.assert_error(429, "rate-limited");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("Wait "), "{message}");
    let secs: u64 = reply
        .header("retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    secs
}

fn request_id(reply: &Reply) -> String {
    reply.header("x-request-id").expect("x-request-id").into()
}

// ------------------------------------------------------------ per address

#[tokio::test]
async fn past_the_burst_an_address_gets_429_with_retry_after_and_one_audit_line() {
    let gate = TestGate::start_with(&limits((1, 3), PLENTY), &[]).await;
    gate.app.audit.capture();
    for _ in 0..3 {
        gate.post(LOGIN_OPTIONS, &json!({})).await.ok_json();
    }
    let first = gate.post(LOGIN_OPTIONS, &json!({})).await;
    // One a minute: the next request is a minute away.
    assert_eq!(assert_limited(&first), 60);
    let v = first.json();
    assert!(
        v["message"].as_str().unwrap().contains("your network"),
        "{v}"
    );
    // Hammering on changes nothing, and is not audited line by line.
    for _ in 0..20 {
        assert_limited(&gate.post(LOGIN_OPTIONS, &json!({})).await);
    }
    let audited = gate.audit_events("rate_limited");
    assert_eq!(audited.len(), 1, "{audited:?}");
    let ev = &audited[0];
    assert_eq!(ev.reason.as_deref(), Some("rate-limited"));
    assert_eq!(ev.detail.as_deref(), Some("per-ip"));
    assert_eq!(ev.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ev.route.as_deref(), Some(LOGIN_OPTIONS));
    assert_eq!(ev.request_id.as_deref(), Some(request_id(&first).as_str()));
}

#[tokio::test]
async fn every_ceremony_endpoint_spends_the_same_address_budget_before_its_body_is_read() {
    let gate = TestGate::start_with(&limits((1, 4), PLENTY), &[]).await;
    // One request to each; their answers (mostly 400s) do not matter.
    for path in [
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
    ] {
        let r = gate.post(path, &json!({})).await;
        assert_ne!(r.status.as_u16(), 429, "{path}: {}", r.text());
    }
    // Budget spent: even a body that is not JSON gets the 429, not a 400.
    for path in [
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
    ] {
        let r = gate.post_body(path, "{not json").await;
        assert_limited(&r);
    }
    // Pages, keys and health are not ceremonies.
    for path in [
        "/.tapgate/healthz",
        "/.tapgate/jwks.json",
        "/.tapgate/login",
    ] {
        let r = gate.get(path, &[]).await;
        assert_eq!(r.status.as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn an_address_budget_refills_at_the_configured_rate() {
    // One a second, two at once.
    let gate = TestGate::start_with(&limits((60, 2), PLENTY), &[]).await;
    gate.post(LOGIN_OPTIONS, &json!({})).await.ok_json();
    gate.post(LOGIN_OPTIONS, &json!({})).await.ok_json();
    let refused = gate.post(LOGIN_OPTIONS, &json!({})).await;
    let wait = assert_limited(&refused);
    assert_eq!(wait, 1);
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 50)).await;
    gate.post(LOGIN_OPTIONS, &json!({})).await.ok_json();
    assert_limited(&gate.post(LOGIN_OPTIONS, &json!({})).await);
}

#[tokio::test]
async fn x_forwarded_for_cannot_choose_the_bucket_unless_a_proxy_is_trusted() {
    let gate = TestGate::start_with(&limits((1, 2), PLENTY), &[]).await;
    gate.app.audit.capture();
    for spoof in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let r = gate
            .post_with(LOGIN_OPTIONS, &json!({}), &[("x-forwarded-for", spoof)])
            .await;
        if spoof.ends_with(".3") {
            assert_limited(&r);
        } else {
            r.ok_json();
        }
    }
    let audited = gate.audit_events("rate_limited");
    assert_eq!(audited[0].ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_address_it_appended_is_the_bucket() {
    let toml = limits((1, 2), PLENTY) + "trusted_proxies = 1\n";
    let gate = TestGate::start_with(&toml, &[]).await;
    gate.app.audit.capture();
    let from = |xff: &'static str| {
        let gate = &gate;
        async move {
            gate.post_with(LOGIN_OPTIONS, &json!({}), &[("x-forwarded-for", xff)])
                .await
        }
    };
    from("198.51.100.1").await.ok_json();
    from("198.51.100.1").await.ok_json();
    assert_limited(&from("198.51.100.1").await);
    // A client that writes its own entry first is still counted by the
    // one the proxy appended …
    assert_limited(&from("203.0.113.9, 198.51.100.1").await);
    // … and another client has its own budget.
    from("203.0.113.9, 198.51.100.2").await.ok_json();
    // Without the header (not through the proxy): the peer's budget.
    gate.post(LOGIN_OPTIONS, &json!({})).await.ok_json();
    let audited = gate.audit_events("rate_limited");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].ip.as_deref(), Some("198.51.100.1"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_every_audit_event_names_the_client_not_the_proxy() {
    let toml = limits(PLENTY, PLENTY) + "trusted_proxies = 1\n";
    let gate = TestGate::start_with(&toml, &[]).await;
    let (mut key, _) = gate.user("ada@example.com", &[]).await;
    gate.app.audit.capture();
    let xff = [("x-forwarded-for", "203.0.113.9, 198.51.100.7")];
    // A sign-in through the proxy (audited by its handler) …
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let body = json!({ "credential": cred, "ceremony": opts["ceremony"] });
    gate.post_with(LOGIN_VERIFY, &body, &xff).await.ok_json();
    // … and a body refused before any handler runs (audited by the outer
    // layer).
    let refused = gate
        .post_with(LOGIN_VERIFY, &json!({ "ceremony": 7 }), &xff)
        .await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.text());
    for name in ["login", "request_refused"] {
        let audited = gate.audit_events(name);
        assert_eq!(audited.len(), 1, "{name}: {audited:?}");
        assert_eq!(audited[0].ip.as_deref(), Some("198.51.100.7"), "{name}");
    }
}

// ------------------------------------------------------------ per account

#[tokio::test]
async fn one_email_is_limited_and_the_refusal_does_not_tell_who_is_registered() {
    let gate = TestGate::start_with(&limits(PLENTY, (1, 2)), &[]).await;
    gate.app.audit.capture();
    // A registered user (the invite's budget: options and verify).
    gate.user("bob@example.com", &["member"]).await;
    for email in ["ann@example.com", "bob@example.com"] {
        gate.login_options(&json!({ "email": email })).await;
        gate.login_options(&json!({ "email": email })).await;
    }
    // The same address in other letters is the same account.
    let ann = gate
        .post(LOGIN_OPTIONS, &json!({ "email": "ANN@Example.com" }))
        .await;
    let bob = gate
        .post(LOGIN_OPTIONS, &json!({ "email": "bob@example.com" }))
        .await;
    assert_eq!(assert_limited(&ann), 60);
    assert_eq!(assert_limited(&bob), 60);
    // Unknown and registered are refused alike.
    let (a, b) = (ann.json(), bob.json());
    assert_eq!(a["message"], b["message"]);
    assert!(
        a["message"].as_str().unwrap().contains("this account"),
        "{a}"
    );
    // Other accounts, and sign-in without an email, are not affected.
    gate.login_options(&json!({ "email": "carl@example.com" }))
        .await;
    gate.login_options(&json!({})).await;
    let audited = gate.audit_events("rate_limited");
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0].email.as_deref(), Some("ann@example.com"));
    assert_eq!(audited[0].detail.as_deref(), Some("per-account"));
    assert_eq!(audited[0].reason.as_deref(), Some("rate-limited"));
    assert_eq!(
        audited[0].request_id.as_deref(),
        Some(request_id(&ann).as_str())
    );
    assert_eq!(audited[1].email.as_deref(), Some("bob@example.com"));
}

#[tokio::test]
async fn an_invite_is_limited_whoever_presents_it_and_its_registration_is_audited() {
    let gate = TestGate::start_with(&limits(PLENTY, (1, 3)), &[]).await;
    gate.app.audit.capture();
    let invite = gate.invite("dana@example.com", &["member"]).await;
    let mut opts = Vec::new();
    for _ in 0..3 {
        opts.push(gate.register_options(&invite).await);
    }
    let refused = gate
        .post(REGISTER_OPTIONS, &json!({ "invite": invite }))
        .await;
    assert_limited(&refused);
    // Another invite has its own budget.
    let other = gate.invite("eve@example.com", &["member"]).await;
    gate.register_options(&other).await;
    // Finishing a ceremony of the spent invite is refused too, and recorded
    // as a failed registration with the reason.
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts[0]["publicKey"], &ClientData::default())
        .await;
    let verify = gate
        .register_verify(&cred, opts[0]["ceremony"].as_str().unwrap())
        .await;
    assert_limited(&verify);
    let rid = request_id(&verify);
    let ev = gate
        .app
        .audit
        .captured()
        .into_iter()
        .find(|e| e.request_id.as_deref() == Some(rid.as_str()))
        .expect("an audit event for the refused registration");
    assert_eq!(ev.event, "registration");
    assert_eq!(ev.reason.as_deref(), Some("rate-limited"));
    assert_eq!(ev.detail.as_deref(), Some("per-account"));
    assert_eq!(ev.email.as_deref(), Some("dana@example.com"));
}

#[tokio::test]
async fn nobody_can_lock_a_key_owner_out_by_spending_a_per_account_budget() {
    let gate = TestGate::start_with(&limits(PLENTY, (1, 2)), &[]).await;
    let (mut fay, _) = gate.user("fay@example.com", &["member"]).await;
    let (mut mallory, _) = gate.user("mallory@example.com", &["member"]).await;
    // Sign-in by email tells anyone the ids of Fay's keys …
    let listed = gate
        .login_options(&json!({ "email": "fay@example.com" }))
        .await;
    let fay_id = listed["publicKey"]["allowCredentials"][0]["id"]
        .as_str()
        .expect("Fay's key id")
        .to_owned();
    // … and spends her email's budget.
    gate.login_options(&json!({ "email": "fay@example.com" }))
        .await;
    let by_email = gate
        .post(LOGIN_OPTIONS, &json!({ "email": "fay@example.com" }))
        .await;
    assert_limited(&by_email);
    assert!(
        by_email.json()["message"]
            .as_str()
            .unwrap()
            .contains("without entering your email"),
        "{}",
        by_email.text()
    );
    // Mallory sends answers naming Fay's key, far past any account budget.
    for _ in 0..6 {
        let opts = gate.login_options(&json!({})).await;
        let mut forged = mallory
            .get(&gate.origin, &opts["publicKey"], &ClientData::default())
            .await;
        forged["id"] = json!(fay_id);
        forged["rawId"] = json!(fay_id);
        let r = gate
            .login_verify(&forged, opts["ceremony"].as_str().unwrap())
            .await;
        assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    }
    // Fay still signs in with her passkey (no email named).
    gate.login(&mut fay).await;
}

#[tokio::test]
async fn adding_keys_is_limited_per_user() {
    let gate = TestGate::start_with(&limits(PLENTY, (1, 3)), &[]).await;
    let (_, session) = gate.user("gus@example.com", &["member"]).await;
    // Registration was counted against the invite; adding keys is counted
    // against the signed-in user: three, then a refusal.
    for _ in 0..3 {
        gate.post_as(REGISTER_OPTIONS, &json!({}), &session)
            .await
            .ok_json();
    }
    assert_limited(&gate.post_as(REGISTER_OPTIONS, &json!({}), &session).await);
}

// ------------------------------------------------------------ defaults

#[tokio::test]
async fn the_default_limits_let_a_team_register_and_sign_in_from_one_address() {
    // Limits named, so the harness leaves the production defaults on.
    let gate = TestGate::start_with("", &[("TAPGATE_LIMITS__ENABLED", "true")]).await;
    assert_eq!(
        gate.app.config.limits,
        tapgate::config::LimitsConfig::default()
    );
    // Five people behind one office address, within a few seconds: each
    // registers from an invite, then signs in with their email.
    let mut keys = Vec::new();
    for name in ["ann", "bob", "cat", "dan", "eve"] {
        let (key, _) = gate.user(&format!("{name}@example.com"), &["member"]).await;
        keys.push((name, key));
    }
    for (name, key) in &mut keys {
        gate.login_with(key, &json!({ "email": format!("{name}@example.com") }))
            .await;
    }
}

#[tokio::test]
async fn with_limits_off_nothing_is_counted_or_remembered() {
    let toml = limits((1, 1), (1, 1)) + "enabled = false\n";
    let gate = TestGate::start_with(&toml, &[]).await;
    for _ in 0..30 {
        gate.login_options(&json!({ "email": "hal@example.com" }))
            .await;
    }
    assert_eq!(gate.app.limits.tracked(), (0, 0));
}

// ------------------------------------------------------------ pending ceremonies

/// A gate on a SQLite file, and a second connection to read it directly.
async fn gate_on_file(dir: &tempfile::TempDir) -> (TestGate, sqlx::SqlitePool) {
    let url = format!("sqlite://{}", dir.path().join("tapgate.db").display());
    let store = tapgate::store::SqliteStore::open(&url).await.unwrap();
    let gate = TestGate::start_on(std::sync::Arc::new(store), "", &[]).await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    (gate, pool)
}

async fn burnt_challenges(pool: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM consumed_challenges")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unfinished_ceremony_costs_the_server_nothing_to_remember() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, pool) = gate_on_file(&dir).await;
    let invite = gate.invite("ian@example.com", &["member"]).await;
    let before = burnt_challenges(&pool).await;
    assert_eq!(before, 0);
    // Ceremonies begun and never finished: the state is in the answer
    // (sealed), nothing is written anywhere.
    for i in 0..100 {
        gate.login_options(&json!({})).await;
        gate.login_options(&json!({ "email": format!("u{i}@example.com") }))
            .await;
        gate.register_options(&invite).await;
    }
    assert_eq!(burnt_challenges(&pool).await, 0);
    // With limits off (this harness) the limiter remembers nothing either.
    assert_eq!(gate.app.limits.tracked(), (0, 0));
    // A finished one burns its challenge: one row.
    let mut key = SoftKey::new();
    gate.register(&mut key, &invite).await;
    assert_eq!(burnt_challenges(&pool).await, 1);
}

#[tokio::test]
async fn burnt_challenges_are_pruned_once_their_ceremony_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, pool) = gate_on_file(&dir).await;
    let (mut key, _) = gate.user("jo@example.com", &["member"]).await;
    assert_eq!(burnt_challenges(&pool).await, 1);
    // Five sign-ins whose ceremony states expire in 2 s.
    let expires = now_unix() + 2;
    for _ in 0..5 {
        let opts = gate.login_options(&json!({})).await;
        let short = gate.reseal(opts["ceremony"].as_str().unwrap(), |s| s.exp = expires);
        let cred = key
            .get(&gate.origin, &opts["publicKey"], &ClientData::default())
            .await;
        gate.login_verify(&cred, &short).await.ok_json();
    }
    assert_eq!(burnt_challenges(&pool).await, 6);
    // Once they are past expiry, the next burn removes them: what stays
    // is bounded by the ceremonies finished within one challenge_ttl.
    while now_unix() <= expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gate.login(&mut key).await;
    assert_eq!(burnt_challenges(&pool).await, 2);
}

// ------------------------------------------------------------ sizes (in-process)

#[tokio::test]
async fn a_ceremony_request_with_headers_over_64_kib_is_431_with_a_message() {
    let gate = TestGate::start().await;
    let cookie = format!("big={}", "x".repeat(70 * 1024));
    let r = gate
        .post_with(LOGIN_OPTIONS, &json!({}), &[("cookie", cookie.as_str())])
        .await;
    let v = r.assert_error(431, "headers-too-large");
    assert!(v["message"].as_str().unwrap().contains("cookies"), "{v}");
    // Just under the limit is fine.
    let cookie = format!("big={}", "x".repeat(60 * 1024));
    gate.post_with(LOGIN_OPTIONS, &json!({}), &[("cookie", cookie.as_str())])
        .await
        .ok_json();
}

#[tokio::test]
async fn a_chunked_ceremony_body_over_64_kib_is_413() {
    let gate = TestGate::start().await;
    // No Content-Length: the limit must hold while the body streams in.
    let big = json!({ "email": "x".repeat(80 * 1024) }).to_string();
    let mut request = format!(
        "POST {LOGIN_OPTIONS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in big.as_bytes().chunks(8 * 1024) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).unwrap());
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    let (status, answer) = raw_http(gate.addr, &request).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("body-too-large"), "{answer}");
}

#[tokio::test]
async fn a_declared_length_over_64_kib_is_413_before_the_body_is_sent() {
    let gate = TestGate::start().await;
    let (status, answer) = raw_http(
        gate.addr,
        &format!(
            "POST {LOGIN_OPTIONS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            1024 * 1024 * 1024
        ),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("body-too-large"), "{answer}");
}

#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_answer_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = TestGate::start().await;
    let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let head = format!(
        "POST {LOGIN_OPTIONS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The 413 is sent, and the server is done with the connection, before
    // the body is read; the client, like most, goes on sending it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    for _ in 0..8 {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    // A socket closed with unread data is reset: the client would see
    // that rather than the answer. The server reads and discards instead.
    assert_eq!(
        sent,
        8 * chunk.len(),
        "the server cut the client off: {answer}"
    );
    assert!(read.is_ok(), "{read:?} after: {answer}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body-too-large"), "{answer}");
}

// ------------------------------------------------------------ sizes (the binary)

mod binary {
    //! `tapgate demo` as a child process: the limits as the command line
    //! and the demo's configuration set them.

    use super::*;

    struct Demo {
        _child: Running,
        _dir: tempfile::TempDir,
        addr: std::net::SocketAddr,
    }

    async fn demo() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut c = tapgate(dir.path());
        c.arg("demo")
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn");
        let demo = Demo {
            _child: Running::spawn(c),
            _dir: dir,
            addr: ([127, 0, 0, 1], port).into(),
        };
        wait_healthy(
            &Gate::new(demo.addr),
            Duration::from_secs(30),
            Duration::from_millis(50),
            "tapgate demo",
            String::new,
        )
        .await;
        demo
    }

    fn request_with_headers(extra: &str) -> String {
        format!(
            "POST {LOGIN_OPTIONS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n{extra}Connection: close\r\n\r\n{{}}"
        )
    }

    #[tokio::test]
    async fn the_serve_loop_answers_oversized_and_overlong_header_blocks_with_4xx_and_carries_on() {
        let demo = demo().await;
        // Our own limit, in the house shape.
        let big = format!("Cookie: big={}\r\n", "x".repeat(100 * 1024));
        let (status, answer) = raw_http(demo.addr, &request_with_headers(&big)).await;
        assert_eq!(status, 431, "{answer}");
        assert!(answer.contains("headers-too-large"), "{answer}");
        // More header fields than hyper parses (100): hyper's bare 431.
        let many: String = (0..150).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
        let (status, answer) = raw_http(demo.addr, &request_with_headers(&many)).await;
        assert_eq!(status, 431, "{answer}");
        // The server carries on.
        let (status, answer) = raw_http(demo.addr, &request_with_headers("")).await;
        assert_eq!(status, 200, "{answer}");
        let body: Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
        assert!(body["publicKey"]["challenge"].is_string(), "{body}");
    }
}
