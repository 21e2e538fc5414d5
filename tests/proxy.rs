//! The gate and the reverse proxy (PRODUCT.md §3): what the upstream
//! receives (identity we vouch for, nothing the client asserted, bodies and
//! WebSockets unchanged), and what a client gets when it may not pass.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[[route]]
path = "/admin/"
allow_roles = ["admin"]
max_auth_age = "5m"

[[route]]
path = "/public/"
public = true

[[route]]
path = "/"
allow_roles = ["member", "admin"]
"#;

// ------------------------------------------------------------ identity upstream

#[tokio::test]
async fn a_proxied_request_carries_identity_and_an_assertion_that_verifies_with_the_jwks() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member", "ops"]).await;
    let subject = session.body["subject"].as_str().unwrap().to_owned();

    let r = gate
        .get(
            "/app/page?x=1&y=two",
            &[
                ("cookie", &session.cookie()),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-upstream"),
        Some("test"),
        "the upstream's own headers come back"
    );
    assert_eq!(r.json()["path"], "/app/page?x=1&y=two");

    let seen = gate.upstream.one("/app/page?x=1&y=two");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.header("x-tapgate-user"), Some(subject.as_str()));
    assert_eq!(seen.header("x-tapgate-email"), Some("ann@example.com"));
    assert_eq!(seen.header("x-tapgate-roles"), Some("member,ops"));
    // The compatibility sets are off unless configured.
    assert_eq!(seen.header("x-goog-authenticated-user-email"), None);
    assert_eq!(seen.header("x-auth-request-user"), None);

    let jwt = seen
        .header("x-tapgate-assertion")
        .expect("assertion")
        .to_owned();
    let claims = verify_assertion(&gate, &jwt).await;
    let now = now_unix();
    assert_eq!(claims["iss"], gate.origin.as_str());
    assert_eq!(claims["aud"], gate.origin.as_str());
    assert_eq!(claims["sub"], subject.as_str());
    assert_eq!(claims["email"], "ann@example.com");
    assert_eq!(claims["roles"], json!(["member", "ops"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 300, "iat {iat} exp {exp}");
    assert_eq!(exp - iat, 60, "default assertion.ttl");
    assert!(iat.abs_diff(now) <= 5);
    let auth_time = claims["auth_time"].as_u64().unwrap();
    assert!(auth_time <= iat && now - auth_time <= 10);
    // A synced passkey (passkey-authenticator sets BE) with UV.
    assert_eq!(claims["amr"], json!(["swk", "user", "mfa"]));
    assert_eq!(
        claims["authn"],
        json!({ "uv": true, "synced": true, "attested": false, "aaguid": AAGUID_TEXT })
    );
    assert!(claims["cred"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        jsonwebtoken::decode_header(&jwt).unwrap().typ.as_deref(),
        Some("JWT")
    );
}

#[tokio::test]
async fn compatibility_headers_are_sent_when_configured() {
    let gate = TestGate::start_with("[headers]\niap = true\noauth2_proxy = true\n", &[]).await;
    let (_, session) = gate.user("ann@example.com", &["member", "ops"]).await;
    let subject = session.body["subject"].as_str().unwrap().to_owned();
    let r = gate
        .get(
            "/compat",
            &[
                ("cookie", &session.cookie()),
                (
                    "x-goog-authenticated-user-email",
                    "accounts.google.com:mallory@evil.example",
                ),
                ("x-auth-request-user", "mallory"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = gate.upstream.one("/compat");
    assert_eq!(
        seen.header_all("x-goog-authenticated-user-email"),
        ["accounts.google.com:ann@example.com"]
    );
    assert_eq!(
        seen.header_all("x-goog-authenticated-user-id"),
        [format!("accounts.google.com:{subject}")]
    );
    assert_eq!(seen.header_all("x-auth-request-user"), [subject.as_str()]);
    assert_eq!(seen.header_all("x-auth-request-email"), ["ann@example.com"]);
    assert_eq!(seen.header_all("x-auth-request-groups"), ["member,ops"]);
}

#[tokio::test]
async fn an_assertion_is_never_accepted_as_a_session() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    gate.get("/a", &[("cookie", &session.cookie())]).await;
    let jwt = gate
        .upstream
        .one("/a")
        .header("x-tapgate-assertion")
        .unwrap()
        .to_owned();
    // An upstream that received it replays it to us.
    gate.get(
        "/b",
        &[
            ("authorization", &format!("Bearer {jwt}")),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(401, "session-invalid");
    gate.get(
        "/b",
        &[
            ("cookie", &format!("tapgate_session={jwt}")),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(401, "session-invalid");
    assert!(gate.upstream.requests().iter().all(|r| r.path != "/b"));
}

#[tokio::test]
async fn a_bearer_token_works_for_api_clients_and_is_not_forwarded() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .get(
            "/api/items",
            &[
                ("authorization", &format!("Bearer {}", session.token)),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/api/items");
    assert_eq!(
        seen.header("authorization"),
        None,
        "our bearer token is stripped"
    );
    assert_eq!(seen.header("x-tapgate-email"), Some("ann@example.com"));
    assert!(!format!("{:?}", seen.headers).contains(&session.token));

    // With the session in the cookie, the app's own Authorization passes.
    let r = gate
        .get(
            "/api/basic",
            &[
                ("cookie", &session.cookie()),
                ("authorization", "Basic YXBwOnNlY3JldA=="),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gate.upstream.one("/api/basic").header("authorization"),
        Some("Basic YXBwOnNlY3JldA==")
    );
}

#[tokio::test]
async fn a_5_mib_post_body_is_streamed_to_the_upstream_unchanged() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    // Deterministic, non-repeating bytes.
    let mut body = Vec::with_capacity(5 * 1024 * 1024);
    let mut x: u32 = 0x1234_5678;
    while body.len() < 5 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.extend_from_slice(&x.to_le_bytes());
    }
    let r = gate
        .send(
            gate.http
                .post(gate.url("/upload?name=blob.bin"))
                .header("cookie", session.cookie())
                .header("content-type", "application/octet-stream")
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], body.len());
    let seen = gate.upstream.one("/upload?name=blob.bin");
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "the body changed on its way");

    // Chunked (no Content-Length) bodies stream too: a raw HTTP/1.1 request
    // sent in 256 KiB chunks.
    let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let head = format!(
        "PUT /upload-chunked HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gate.addr.port(),
        session.cookie()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(256 * 1024) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = gate.upstream.one("/upload-chunked");
    assert_eq!(seen.method, "PUT");
    assert!(seen.body == body, "the chunked body changed on its way");
}

#[tokio::test]
async fn the_upstream_never_sees_the_session_cookie_but_keeps_the_others() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let cookie = format!(
        "theme=dark; {}; tapgate_ceremony=abc; app_session=xyz",
        session.cookie()
    );
    let r = gate.get("/c", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    let seen = gate.upstream.one("/c");
    assert_eq!(seen.header_all("cookie"), ["theme=dark; app_session=xyz"]);
    assert!(!format!("{:?}", seen.headers).contains(&session.token));
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let gate = TestGate::start_with(ROUTES, &[]).await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let subject = session.body["subject"].as_str().unwrap().to_owned();
    let forged: &[(&str, &str)] = &[
        ("x-tapgate-user", "mallory"),
        ("x-tapgate-email", "mallory@evil.example"),
        ("x-tapgate-roles", "admin"),
        ("x-tapgate-assertion", "eyJhbGciOiJub25lIn0.e30."),
        (
            "x-goog-authenticated-user-email",
            "accounts.google.com:mallory@evil.example",
        ),
        ("x-goog-authenticated-user-id", "accounts.google.com:1"),
        ("x-goog-iap-jwt-assertion", "forged"),
        ("x-auth-request-user", "mallory"),
        ("x-auth-request-email", "mallory@evil.example"),
        ("x-auth-request-groups", "admin"),
        ("x-forwarded-user", "mallory"),
        ("x-forwarded-email", "mallory@evil.example"),
        ("remote-user", "mallory"),
        ("x-remote-user", "mallory"),
        ("X-Tapgate-User", "mallory-again"),
    ];
    let mut headers = forged.to_vec();
    let cookie = session.cookie();
    headers.push(("cookie", &cookie));
    let r = gate.get("/signed-in", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/signed-in");
    assert_eq!(seen.header_all("x-tapgate-user"), [subject]);
    assert_eq!(seen.header_all("x-tapgate-email"), ["ann@example.com"]);
    assert_eq!(seen.header_all("x-tapgate-roles"), ["member"]);
    assert_eq!(seen.header_all("x-tapgate-assertion").len(), 1);
    assert_ne!(
        seen.header("x-tapgate-assertion"),
        Some("eyJhbGciOiJub25lIn0.e30.")
    );
    for (name, _) in &forged[4..] {
        if name.starts_with("X-Tapgate") {
            continue;
        }
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert!(!format!("{:?}", seen.headers).contains("mallory"));

    // Anonymous on a public route: nothing of it gets through either.
    let r = gate.get("/public/page", forged).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/public/page");
    for (name, _) in forged {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the upstream anonymously"
        );
    }
}

#[tokio::test]
async fn forwarded_headers_are_set_and_host_is_the_upstreams() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate.get("/fwd", &[("cookie", &session.cookie())]).await;
    assert_eq!(r.status, 200);
    let seen = gate.upstream.one("/fwd");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let host = format!("localhost:{}", gate.addr.port());
    assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    let upstream_host = gate.upstream.addr.to_string();
    assert_eq!(seen.header("host"), Some(upstream_host.as_str()));
    // The request id the client sees is the one the upstream got.
    assert!(r.header("x-request-id").is_some());
    assert_eq!(seen.header("x-request-id"), r.header("x-request-id"));

    // Client-sent X-Forwarded-Proto/Host are replaced, not trusted.
    let r = gate
        .get(
            "/fwd-forged",
            &[
                ("cookie", &session.cookie()),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = gate.upstream.one("/fwd-forged");
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), [host.as_str()]);

    // A load balancer's chain is kept and our peer appended.
    let r = gate
        .get(
            "/fwd2",
            &[
                ("cookie", &session.cookie()),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gate.upstream.one("/fwd2").header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .get(
            "/hop",
            &[
                ("cookie", &session.cookie()),
                ("connection", "keep-alive, x-secret-hop"),
                ("x-secret-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic cHJveHk6cHc="),
                ("te", "trailers"),
                ("trailer", "x-checksum"),
                ("proxy-connection", "keep-alive"),
                ("x-end-to-end", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/hop");
    for name in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "proxy-connection",
        "upgrade",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded");
    }
    assert!(
        seen.header_all("connection")
            .iter()
            .all(|c| !c.contains("x-secret-hop")),
        "{:?}",
        seen.header_all("connection")
    );
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
}

// ------------------------------------------------------------ WebSocket

/// A raw HTTP/1.1 WebSocket handshake to `/ws`, then one masked text frame;
/// returns the status line, headers and the echoed text.
async fn websocket_echo(
    gate: &TestGate,
    auth: Option<&str>,
    text: &str,
) -> (String, String, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(gate.addr)
        .await
        .expect("connect");
    let mut req = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost:{}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {}\r\n",
        gate.addr.port(),
        gate.origin
    );
    if let Some(cookie) = auth {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        }
    })
    .await
    .expect("handshake answered within 5 s");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut rest = buf[end..].to_vec();
    let (status, headers) = head.split_once("\r\n").unwrap();
    let (status, headers) = (status.to_owned(), headers.to_ascii_lowercase());
    if !status.contains(" 101 ") {
        return (status, headers, None);
    }
    // One masked text frame (client → server frames must be masked).
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), async {
        while rest.len() < 2 || rest.len() < 2 + usize::from(rest[1] & 0x7f) {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the echo");
            rest.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(rest[0], 0x81, "a final text frame");
        assert_eq!(rest[1] & 0x80, 0, "server frames are not masked");
        let len = usize::from(rest[1] & 0x7f);
        String::from_utf8(rest[2..2 + len].to_vec()).unwrap()
    })
    .await
    .expect("echo within 5 s");
    (status, headers, Some(echoed))
}

#[tokio::test]
async fn a_websocket_upgrade_is_carried_to_the_upstream_echo() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let (status, headers, echoed) = websocket_echo(&gate, Some(&session.cookie()), "hello").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}\n{headers}");
    assert!(headers.contains("upgrade: websocket"), "{headers}");
    // RFC 6455's example key → accept.
    assert!(
        headers.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{headers}"
    );
    assert_eq!(echoed.as_deref(), Some("echo: hello"));
    // The upgrade request carried our identity and not our cookie.
    let seen = gate.upstream.one("/ws");
    assert_eq!(seen.header("x-tapgate-email"), Some("ann@example.com"));
    assert!(seen.header("x-tapgate-assertion").is_some());
    assert_eq!(seen.header("cookie"), None);
}

#[tokio::test]
async fn a_websocket_upgrade_without_a_session_is_refused() {
    let gate = TestGate::start().await;
    let (status, headers, echoed) = websocket_echo(&gate, None, "hello").await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}\n{headers}");
    assert!(echoed.is_none());
    assert_eq!(gate.upstream.count(), 0);
}

// ------------------------------------------------------------ not signed in

#[tokio::test]
async fn an_anonymous_browser_navigation_is_redirected_to_sign_in() {
    let gate = TestGate::start().await;
    let r = gate
        .get(
            "/path?q=1",
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("/.tapgate/login?rd=%2Fpath%3Fq%3D1")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // HEAD is a navigation too.
    let r = gate
        .send(
            gate.http
                .head(gate.url("/path?q=1"))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/.tapgate/login?rd=%2Fpath%3Fq%3D1")
    );
    // The sign-in page it points to exists.
    let page = gate
        .get(
            "/.tapgate/login?rd=%2Fpath%3Fq%3D1",
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(gate.upstream.count(), 0);
}

#[tokio::test]
async fn an_anonymous_api_request_is_401_json_with_www_authenticate() {
    let gate = TestGate::start().await;
    for (method, accept) in [
        ("GET", "application/json"),
        ("GET", "*/*"),
        // Not a navigation: a form POST from a page still gets 401, not a redirect.
        ("POST", "text/html"),
        ("DELETE", "application/json"),
    ] {
        let rb = gate
            .http
            .request(method.parse().unwrap(), gate.url("/api/things?id=7"))
            .header("accept", accept);
        let r = gate.send(rb).await;
        r.assert_error(401, "user-unauthenticated");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"tapgate\""),
            "{method} {accept}"
        );
    }
    assert_eq!(gate.upstream.count(), 0);
}

#[tokio::test]
async fn bad_expired_and_foreign_session_tokens_are_401_with_their_reason() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let json_accept = ("accept", "application/json");
    gate.get("/x", &[("cookie", "tapgate_session=garbage"), json_accept])
        .await
        .assert_error(401, "session-invalid");
    let now = now_unix();
    let expired = gate.session_at(&session, now - 7200, 3600, now - 7200);
    gate.get("/x", &[("cookie", &expired.cookie()), json_accept])
        .await
        .assert_error(401, "session-expired");
    gate.get(
        "/x",
        &[
            ("authorization", &format!("Bearer {}", expired.token)),
            json_accept,
        ],
    )
    .await
    .assert_error(401, "session-expired");
    // Signed by another tapgate's key.
    let other = TestGate::start().await;
    let (_, foreign) = other.user("ann@example.com", &["member"]).await;
    gate.get("/x", &[("cookie", &foreign.cookie()), json_accept])
        .await
        .assert_error(401, "session-invalid");
    // A browser with a stale cookie is sent to sign in again.
    let r = gate
        .get(
            "/x",
            &[("cookie", &expired.cookie()), ("accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(gate.upstream.count(), 0);
}

// ------------------------------------------------------------ forward auth

#[tokio::test]
async fn forward_auth_is_401_without_a_session_and_200_with_identity_with_one() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .get(
            "/.tapgate/auth",
            &[("x-original-uri", "/app/page?x=1"), ("accept", "text/html")],
        )
        .await;
    // Even for a browser's subrequest: 401 (the front proxy turns it into
    // the redirect), never a 302 of our own.
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    gate.get(
        "/.tapgate/auth",
        &[
            ("x-original-uri", "/app/page?x=1"),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(401, "user-unauthenticated");

    let r = gate
        .get(
            "/.tapgate/auth",
            &[
                ("x-original-uri", "/app/page?x=1"),
                ("cookie", &session.cookie()),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tapgate-user"), session.body["subject"].as_str());
    assert_eq!(r.header("x-tapgate-email"), Some("ann@example.com"));
    assert_eq!(r.header("x-tapgate-roles"), Some("member"));
    let claims = verify_assertion(&gate, r.header("x-tapgate-assertion").unwrap()).await;
    assert_eq!(claims["sub"], session.body["subject"]);
    // Forward auth decides; it never proxies.
    assert_eq!(gate.upstream.count(), 0);

    // Traefik's header names, and a bearer token.
    let r = gate
        .get(
            "/.tapgate/auth",
            &[
                ("x-forwarded-uri", "/api/v1"),
                ("x-forwarded-method", "POST"),
                ("authorization", &format!("Bearer {}", session.token)),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn route_policy_denies_with_reasons_and_asks_for_a_fresh_tap() {
    let gate = TestGate::start_with(ROUTES, &[]).await;
    let (_, member) = gate.user("ann@example.com", &["member"]).await;
    let (_, admin) = gate.user("root@example.com", &["admin"]).await;
    let json_accept = ("accept", "application/json");

    gate.get("/admin/users", &[("cookie", &member.cookie()), json_accept])
        .await
        .assert_error(403, "route-role-missing");
    gate.get(
        "/.tapgate/auth",
        &[
            ("cookie", &member.cookie()),
            ("x-original-uri", "/admin/users"),
        ],
    )
    .await
    .assert_error(403, "route-role-missing");

    let r = gate
        .get("/admin/users", &[("cookie", &admin.cookie())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        gate.upstream.one("/admin/users").header("x-tapgate-roles"),
        Some("admin")
    );

    // The last tap is 10 minutes old: the route wants one within 5.
    let now = now_unix();
    let stale = gate.session_at(&admin, now, 3600, now - 600);
    let r = gate
        .get(
            "/admin/users?page=2",
            &[("cookie", &stale.cookie()), json_accept],
        )
        .await;
    r.assert_error(401, "auth-too-old");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication") && challenge.contains("max_age=300"),
        "{challenge}"
    );
    let r = gate
        .get(
            "/admin/users?page=2",
            &[("cookie", &stale.cookie()), ("accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with("/.tapgate/login?rd=%2Fadmin%2Fusers%3Fpage%3D2"),
        "{location}"
    );
    // …but the stale session is fine where no fresh tap is needed.
    let r = gate.get("/home", &[("cookie", &stale.cookie())]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn paths_with_dot_segments_or_encoded_separators_are_refused() {
    let gate = TestGate::start_with(ROUTES, &[]).await;
    let (_, member) = gate.user("ann@example.com", &["member"]).await;
    // Sent raw: an URL library would resolve some of these before sending.
    for path in [
        "/public/..%2fadmin/users",
        "/public/%2e%2e/admin/users",
        "/public/../admin/users",
        "/public/./x",
        "/x//admin/",
        "/public\\..\\admin",
        "/public/x%00",
    ] {
        let (status, answer) = raw_http(
            gate.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
                 Cookie: {}\r\nConnection: close\r\n\r\n",
                member.cookie()
            ),
        )
        .await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer.contains("\"error\":\"path-not-normalised\""),
            "{path}: {answer}"
        );
    }
    gate.get(
        "/.tapgate/auth",
        &[
            ("cookie", &member.cookie()),
            ("x-original-uri", "/public/../admin/users"),
        ],
    )
    .await
    .assert_error(400, "path-not-normalised");
    assert_eq!(gate.upstream.count(), 0);
}

// ------------------------------------------------------------ tapgate's own endpoints

#[tokio::test]
async fn an_unreachable_upstream_is_502_upstream_unavailable() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    gate.upstream.stop().await;
    gate.get(
        "/down",
        &[
            ("cookie", &session.cookie()),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(502, "upstream-unavailable");
}

#[tokio::test]
async fn jwks_health_and_unknown_paths() {
    let gate = TestGate::start().await;
    let r = gate.get("/.tapgate/jwks.json", &[]).await;
    let jwks = r.ok_json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0]["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(keys[0].get("d").is_none(), "no private key material");
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("max-age"))
    );

    assert_eq!(gate.get("/.tapgate/healthz", &[]).await.status, 200);
    assert_eq!(gate.get("/.tapgate/readyz", &[]).await.status, 200);
    gate.get("/.tapgate/nothing-here", &[("accept", "application/json")])
        .await
        .assert_error(404, "not-found");
    gate.get(
        "/.tapgate/api/nothing-here",
        &[("accept", "application/json")],
    )
    .await
    .assert_error(404, "not-found");
    gate.get("/.tapgate/api/me", &[("accept", "application/json")])
        .await
        .assert_error(401, "user-unauthenticated");
    // Our namespace is never proxied, signed in or not.
    assert_eq!(gate.upstream.count(), 0);
}

#[tokio::test]
async fn logout_clears_the_session_cookie() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .send(
            gate.http
                .post(gate.url("/.tapgate/logout"))
                .header("origin", &gate.origin)
                .header("accept", "application/json")
                .header("cookie", session.cookie()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["redirect"], "/.tapgate/login");
    let line = r
        .set_cookie_line("tapgate_session")
        .expect("cleared cookie");
    assert!(
        line.starts_with("tapgate_session=;") && line.contains("Max-Age=0"),
        "{line}"
    );
    // A form POST gets a 303 to the sign-in page.
    let r = gate
        .send(
            gate.http
                .post(gate.url("/.tapgate/logout"))
                .header("origin", &gate.origin)
                .header("cookie", session.cookie()),
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/.tapgate/login"));
}

#[tokio::test]
async fn behind_tls_the_session_cookie_is_host_prefixed_and_secure() {
    let gate = TestGate::start_https().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts_reply = gate
        .post(
            "/.tapgate/api/register/options",
            &json!({ "invite": invite }),
        )
        .await;
    let opts = opts_reply.ok_json();
    let ceremony_cookie = opts_reply
        .set_cookie_line("tapgate_ceremony")
        .expect("ceremony cookie");
    assert!(ceremony_cookie.contains("; Secure"), "{ceremony_cookie}");
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = gate
        .register_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await;
    reply.ok_json();
    let line = reply
        .set_cookie_line("__Host-tapgate_session")
        .expect("__Host- session cookie");
    for attr in ["; Path=/;", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
        assert!(line.contains(attr), "{attr} missing in {line}");
    }
    assert!(!line.to_ascii_lowercase().contains("domain="), "{line}");
    assert!(reply.set_cookie_line("tapgate_session").is_none());
    let token = reply.cookie("__Host-tapgate_session").unwrap();

    let cookie = format!("__Host-tapgate_session={token}; theme=dark");
    let r = gate.get("/tls", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/tls");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header_all("cookie"), ["theme=dark"]);
    let claims = verify_assertion(&gate, seen.header("x-tapgate-assertion").unwrap()).await;
    assert_eq!(claims["iss"], gate.origin.as_str());

    // The unprefixed name is not ours here (a sibling subdomain could set it).
    gate.get(
        "/tls",
        &[
            ("cookie", &format!("tapgate_session={token}")),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(401, "user-unauthenticated");
}

#[tokio::test]
async fn regression_bearer_session_token_is_stripped_even_when_the_cookie_authenticated() {
    // PRODUCT.md §3: before forwarding, tapgate removes its own cookie and
    // bearer token. A client (e.g. a CLI with a cookie jar) that sends both
    // must not leak a session token to the upstream, which could replay it.
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .get(
            "/both",
            &[
                ("cookie", &session.cookie()),
                ("authorization", &format!("Bearer {}", session.token)),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gate.upstream.one("/both");
    assert_eq!(
        seen.header("authorization"),
        None,
        "the upstream received a tapgate session token"
    );
}

#[tokio::test]
async fn regression_wrong_method_on_own_endpoints_is_a_json_error() {
    // PRODUCT.md §3: every JSON error, from any endpoint, has one shape.
    let gate = TestGate::start().await;
    for (method, path) in [
        ("GET", "/.tapgate/api/login/options"),
        ("GET", "/.tapgate/api/register/verify"),
        ("GET", "/.tapgate/logout"),
        ("POST", "/.tapgate/healthz"),
        ("PUT", "/.tapgate/jwks.json"),
    ] {
        let r = gate
            .send(
                gate.http
                    .request(method.parse().unwrap(), gate.url(path))
                    .header("origin", &gate.origin)
                    .header("accept", "application/json"),
            )
            .await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: no JSON body ({:?}, {:?})",
            r.header("content-type"),
            r.text()
        );
        let v = r.json();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(' ')),
            "{v}"
        );
        assert_eq!(v["request_id"].as_str(), r.header("x-request-id"));
    }
}

#[tokio::test]
async fn hop_by_hop_headers_in_the_upstreams_answer_are_not_passed_on() {
    let gate = TestGate::start().await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let r = gate
        .get("/hop-response", &[("cookie", &session.cookie())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-up-end-to-end"), Some("kept"));
    assert_eq!(r.header("x-up-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert!(
        r.headers
            .get_all("connection")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").contains("x-up-hop"))
    );
}

#[tokio::test]
async fn a_slow_upstream_is_504_upstream_timeout() {
    let gate = TestGate::start_with("[proxy]\ntimeout = \"1s\"\n", &[]).await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    let started = std::time::Instant::now();
    gate.get(
        "/slow",
        &[
            ("cookie", &session.cookie()),
            ("accept", "application/json"),
        ],
    )
    .await
    .assert_error(504, "upstream-timeout");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

/// A raw HTTP/1 upstream answering "ok" to bodiless requests; with
/// `close_each`, it closes every connection after one answer without saying
/// so (no `Connection: close`), as a server does whose keep-alive timeout
/// has just run out. The counter counts accepted connections.
async fn raw_upstream(close_each: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if s.write_all(answer).await.is_err() || close_each {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn an_upstream_closing_kept_alive_connections_costs_no_request() {
    let (url, connections) = raw_upstream(true).await;
    let gate = TestGate::start_with("", &[("TAPGATE_UPSTREAM", url.as_str())]).await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    for i in 0..30 {
        let r = gate.get("/again", &[("cookie", &session.cookie())]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok\n");
        // Now and then straight away, so that a request may be given a
        // connection that is closing under it.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 30);
}

#[tokio::test]
async fn kept_alive_upstream_connections_are_reused() {
    let (url, connections) = raw_upstream(false).await;
    let gate = TestGate::start_with("", &[("TAPGATE_UPSTREAM", url.as_str())]).await;
    let (_, session) = gate.user("ann@example.com", &["member"]).await;
    for i in 0..30 {
        let r = gate.get("/reuse", &[("cookie", &session.cookie())]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // One idle connection per serving thread at most, not one per request.
    let opened = connections.load(Ordering::SeqCst);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(opened <= threads, "{opened} connections for 30 requests");
}
