//! `TestGate`: the real serving stack in-process (serve loop, front,
//! router), in front of a recording upstream, driven over real HTTP by real
//! WebAuthn ceremonies (1Password's software authenticator,
//! `passkey-authenticator` + `passkey-client`).
//!
//! - [`TestGate::start`] binds tapgate on 127.0.0.1:0 with
//!   `public_url = http://localhost:PORT` (the client pins `localhost` to that
//!   address), an in-memory SQLite store and a fresh signing key.
//! - [`Upstream`] records every request it receives (method, path, headers,
//!   body) and answers JSON; `/ws` is a WebSocket echo.
//! - [`SoftKey`] is an authenticator with one credential; [`ClientData`]
//!   rewrites the clientDataJSON a browser would send (origin, crossOrigin,
//!   topOrigin) *before* the authenticator signs, and `rp_id` makes the
//!   authenticator sign for another relying party.
//! - [`Gate`] is the HTTP side (a browser-like client: `Origin` on POSTs,
//!   cookies by hand), shared with the CLI tests that drive the real binary.
//! - [`process`]: the real `tapgate` binary as a child (clean environment,
//!   bounded runs, free ports, killed on drop, healthz); [`postgres`]: the
//!   test PostgreSQL and a private schema per test; [`relay`]: a TCP relay
//!   that can be cut.
//!
//! Every test binary compiles this module and uses a part of it, hence
//! `allow(dead_code)` (it covers the submodules too) and `allow(unused_imports)`
//! on the re-exports.
#![allow(dead_code)]

pub mod postgres;
pub mod process;
pub mod relay;

// Re-exported for `use common::*`; a test binary that uses none of them
// would otherwise warn.
#[allow(unused_imports)]
pub use postgres::PgSchema;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use relay::Relay;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use passkey_authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey_client::{Client, DefaultClientData, DefaultClientDataWithCustomHash};
use passkey_types::Passkey;
use passkey_types::ctap2::{Aaguid, Ctap2Error};
use passkey_types::webauthn::{CredentialCreationOptions, CredentialRequestOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tapgate::config::{Config, Mode};
use tapgate::model::{Email, Role};
use tapgate::server::{App, serve_until};
use tapgate::store::{DynStore, SqliteStore};
use tapgate::token::SigningKey;

pub use tapgate_webauthn::{base64url, base64url_decode};

/// The AAGUID our software authenticator reports (arbitrary, recognisable).
pub const AAGUID: [u8; 16] = *b"tapgate-softkey!";
pub const AAGUID_TEXT: &str = "74617067-6174-652d-736f-66746b657921";

pub fn now_unix() -> u64 {
    tapgate::server::now_unix()
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

// ---------------------------------------------------------------- upstream

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Every value of a header, joined the way a proxy may have folded them.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// A recording HTTP upstream (axum on 127.0.0.1:0).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test upstream");
        let addr = listener.local_addr().expect("upstream address");
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(ws_echo))
            .route("/slow", axum::routing::get(slow))
            .route("/hop-response", axum::routing::get(hop_response))
            .fallback(record)
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The only request received for `path` (panics if none or several).
    pub fn one(&self, path: &str) -> Recorded {
        let hits: Vec<Recorded> = self
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "expected exactly one upstream request for {path}, got {:?}",
            self.requests()
                .iter()
                .map(|r| (&r.method, &r.path))
                .collect::<Vec<_>>()
        );
        hits.into_iter().next().expect("one hit")
    }

    pub fn count(&self) -> usize {
        self.requests().len()
    }

    /// Stop listening (for "upstream down" tests).
    pub async fn stop(&self) {
        self.task.abort();
        // Let the runtime drop the aborted task and its listener.
        for _ in 0..50 {
            if self.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Seen = Arc<Mutex<Vec<Recorded>>>;

async fn record(
    axum::extract::State(seen): axum::extract::State<Seen>,
    req: Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    // No limit: the streaming test sends several MiB.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let reply = json!({
        "upstream": "test",
        "method": parts.method.as_str(),
        "path": path,
        "body_len": body.len(),
        "body_sha256": base64url(&sha256(&body)),
    });
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Recorded {
            method: parts.method.to_string(),
            path,
            headers: parts.headers,
            body,
        });
    let mut r = axum::Json(reply).into_response();
    r.headers_mut()
        .insert("x-upstream", axum::http::HeaderValue::from_static("test"));
    r
}

/// Answers after 3 s (for proxy timeouts).
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

/// Answers with connection-specific headers a proxy must not pass on.
async fn hop_response() -> Response {
    let mut r = axum::Json(json!({ "upstream": "test" })).into_response();
    let h = r.headers_mut();
    h.insert(
        "connection",
        axum::http::HeaderValue::from_static("x-up-hop"),
    );
    h.insert("x-up-hop", axum::http::HeaderValue::from_static("1"));
    h.insert(
        "keep-alive",
        axum::http::HeaderValue::from_static("timeout=5"),
    );
    h.insert(
        "x-up-end-to-end",
        axum::http::HeaderValue::from_static("kept"),
    );
    r
}

async fn ws_echo(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Recorded {
            method: "GET".into(),
            path: "/ws".into(),
            headers,
            body: Vec::new(),
        });
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            match msg {
                Message::Text(t) => {
                    let _ = socket
                        .send(Message::Text(format!("echo: {t}").into()))
                        .await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
}

// ---------------------------------------------------------------- HTTP side

/// A reply, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(r: reqwest::Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("read the reply body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The full `Set-Cookie` line for `name`, if any.
    pub fn set_cookie_line(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| {
                c.split(';')
                    .next()
                    .and_then(|kv| kv.split_once('='))
                    .map(|(k, _)| k.trim())
                    == Some(name)
            })
            .map(str::to_owned)
    }

    /// The value a `Set-Cookie` gives `name` (empty string when cleared).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie_line(name).map(|line| {
            let kv = line.split(';').next().unwrap_or("");
            kv.split_once('=').map_or("", |(_, v)| v).trim().to_owned()
        })
    }

    /// Assert a 2xx JSON reply and return its body.
    pub fn ok_json(&self) -> Value {
        assert!(
            self.status.is_success(),
            "expected success, got {}: {}",
            self.status,
            self.text()
        );
        self.json()
    }

    /// Assert the one JSON error shape of PRODUCT.md §3 with this status and
    /// reason code; the message must be a sentence for people, and the
    /// request id the one in `X-Request-Id`.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got {}: {}",
            self.status,
            self.text()
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "error body is not JSON: {:?}",
            self.headers
        );
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(
            obj.keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["error", "message", "request_id"].into_iter().collect(),
            "error body has exactly error, message, request_id: {v}"
        );
        assert_eq!(v["error"], code, "reason code: {v}");
        let message = v["message"].as_str().expect("message is a string");
        assert!(
            message.len() >= 10
                && message.contains(' ')
                && !message.contains("Error(")
                && !message.contains("{ "),
            "message is not human text: {message:?}"
        );
        let rid = v["request_id"].as_str().expect("request_id is a string");
        assert!(!rid.is_empty(), "empty request_id");
        assert_eq!(self.header("x-request-id"), Some(rid), "request id header");
        v
    }
}

/// A session token, as a browser holds it in the `tapgate_session` cookie.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    /// The `verify` reply body.
    pub body: Value,
    /// `tapgate_session`, or `__Host-tapgate_session` behind https.
    pub cookie_name: String,
}

impl Session {
    /// The `Cookie` header a browser would send.
    pub fn cookie(&self) -> String {
        format!("{}={}", self.cookie_name, self.token)
    }
}

/// An HTTP client for one tapgate (in-process or the real binary).
#[derive(Clone)]
pub struct Gate {
    /// The public origin browsers see: `http://localhost:PORT` (or
    /// `https://…` behind a TLS-terminating load balancer).
    pub origin: String,
    /// Where requests are actually sent: `http://localhost:PORT`.
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// The session cookie's name for this public origin.
    pub cookie_name: String,
}

impl Gate {
    pub fn new(addr: SocketAddr) -> Gate {
        let http = reqwest::Client::builder()
            .resolve("localhost", addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("build the HTTP client");
        let base = format!("http://localhost:{}", addr.port());
        Gate {
            origin: base.clone(),
            base,
            addr,
            http,
            cookie_name: "tapgate_session".into(),
        }
    }

    /// A gate whose public URL is `https://localhost:PORT` (TLS ends in
    /// front of it; we talk plain HTTP to it as the load balancer would).
    pub fn behind_tls(addr: SocketAddr) -> Gate {
        let mut g = Gate::new(addr);
        g.origin = format!("https://localhost:{}", addr.port());
        g.cookie_name = "__Host-tapgate_session".into();
        g
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        Reply::read(rb.send().await.expect("request to tapgate")).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut rb = self.http.get(self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb).await
    }

    /// A POST as our own pages make it: JSON, `Origin` = the public origin.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    /// A POST like [`Gate::post`] whose body is sent as given (it need not
    /// be JSON, or even UTF-8).
    pub async fn post_body(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("origin", &self.origin)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut rb = self
            .http
            .post(self.url(path))
            .header("origin", &self.origin)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb).await
    }

    // ---- ceremonies, step by step ----

    pub async fn register_options(&self, invite: &str) -> Value {
        self.post(
            "/.tapgate/api/register/options",
            &json!({ "invite": invite }),
        )
        .await
        .ok_json()
    }

    pub async fn register_verify(&self, credential: &Value, ceremony: &str) -> Reply {
        self.post(
            "/.tapgate/api/register/verify",
            &json!({ "credential": credential, "nickname": "test key", "ceremony": ceremony }),
        )
        .await
    }

    pub async fn login_options(&self, body: &Value) -> Value {
        self.post("/.tapgate/api/login/options", body)
            .await
            .ok_json()
    }

    pub async fn login_verify(&self, credential: &Value, ceremony: &str) -> Reply {
        self.post(
            "/.tapgate/api/login/verify",
            &json!({ "credential": credential, "ceremony": ceremony }),
        )
        .await
    }

    /// Invite → options → authenticator → verify; asserts success.
    pub async fn register(&self, key: &mut SoftKey, invite: &str) -> Session {
        let opts = self.register_options(invite).await;
        let cred = key
            .create(&self.origin, &opts["publicKey"], &ClientData::default())
            .await;
        let reply = self
            .register_verify(&cred, opts["ceremony"].as_str().expect("ceremony"))
            .await;
        let body = reply.ok_json();
        let token = reply
            .cookie(&self.cookie_name)
            .filter(|t| !t.is_empty())
            .expect("register/verify sets the session cookie");
        Session {
            token,
            body,
            cookie_name: self.cookie_name.clone(),
        }
    }

    /// Discoverable sign-in (`{}` options); asserts success.
    pub async fn login(&self, key: &mut SoftKey) -> Session {
        self.login_with(key, &json!({})).await
    }

    pub async fn login_with(&self, key: &mut SoftKey, options_body: &Value) -> Session {
        let opts = self.login_options(options_body).await;
        let cred = key
            .get(&self.origin, &opts["publicKey"], &ClientData::default())
            .await;
        let reply = self
            .login_verify(&cred, opts["ceremony"].as_str().expect("ceremony"))
            .await;
        let body = reply.ok_json();
        let token = reply
            .cookie(&self.cookie_name)
            .filter(|t| !t.is_empty())
            .expect("login/verify sets the session cookie");
        Session {
            token,
            body,
            cookie_name: self.cookie_name.clone(),
        }
    }
}

impl Gate {
    // ---- as a signed-in user ----

    pub async fn get_as(&self, path: &str, session: &Session) -> Reply {
        self.get(
            path,
            &[
                ("cookie", &session.cookie()),
                ("accept", "application/json"),
            ],
        )
        .await
    }

    pub async fn post_as(&self, path: &str, body: &Value, session: &Session) -> Reply {
        self.post_with(path, body, &[("cookie", &session.cookie())])
            .await
    }

    /// The account page's "Add a key": options with the session (no
    /// invite) → the authenticator → verify. Returns the verify reply.
    pub async fn add_key(&self, session: &Session, key: &mut SoftKey) -> Reply {
        let opts = self
            .post_as("/.tapgate/api/register/options", &json!({}), session)
            .await
            .ok_json();
        let cred = key
            .create(&self.origin, &opts["publicKey"], &ClientData::default())
            .await;
        self.post_with(
            "/.tapgate/api/register/verify",
            &json!({ "credential": cred, "nickname": "backup", "ceremony": opts["ceremony"] }),
            &[("cookie", &session.cookie())],
        )
        .await
    }

    /// The session a reply set, or `previous` if it set none.
    pub fn session_from(&self, reply: &Reply, previous: &Session) -> Session {
        match reply.cookie(&self.cookie_name).filter(|t| !t.is_empty()) {
            Some(token) => Session {
                token,
                body: reply.json(),
                cookie_name: self.cookie_name.clone(),
            },
            None => previous.clone(),
        }
    }
}

/// The token of an invite URL (`…/.tapgate/register?invite=TOKEN`).
/// GET /app with `session` every `poll` until `gate` refuses it
/// (401 `session-revoked`); panics if it is still accepted `limit` after
/// `started`. Returns the time from `started` to the refusal.
pub async fn refused_since(
    gate: &Gate,
    session: &Session,
    started: std::time::Instant,
    limit: Duration,
    poll: Duration,
) -> Duration {
    loop {
        let r = gate.get_as("/app", session).await;
        if r.status == 401 {
            r.assert_error(401, "session-revoked");
            return started.elapsed();
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            started.elapsed() < limit,
            "the session was still accepted after {limit:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

pub fn invite_token(url: &str) -> String {
    url.split_once("?invite=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("not an invite URL: {url}"))
}

// ---------------------------------------------------------------- TestGate

/// The real serving stack in-process, in front of a recording [`Upstream`].
pub struct TestGate {
    pub gate: Gate,
    pub app: Arc<App>,
    pub upstream: Upstream,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

/// What instances behind one public URL share.
#[derive(Clone)]
struct Shared {
    extra_toml: String,
    env: Vec<(String, String)>,
    key_pem: String,
    store: DynStore,
}

impl std::ops::Deref for TestGate {
    type Target = Gate;
    fn deref(&self) -> &Gate {
        &self.gate
    }
}

impl Drop for TestGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestGate {
    pub async fn start() -> TestGate {
        TestGate::start_with("", &[]).await
    }

    /// `extra_toml` is appended to the generated file (top-level keys are
    /// taken; add sections such as `[webauthn]`, not `[store]`/`[keys]`);
    /// `env` are `TAPGATE_…` overrides, exactly as the binary reads them.
    pub async fn start_with(extra_toml: &str, env: &[(&str, &str)]) -> TestGate {
        TestGate::start_inner(extra_toml, env, false).await
    }

    /// Public URL `https://localhost:PORT`: tapgate behind a TLS-terminating
    /// load balancer (secure cookies, `__Host-` prefix).
    pub async fn start_https() -> TestGate {
        TestGate::start_inner("", &[], true).await
    }

    async fn start_inner(extra_toml: &str, env: &[(&str, &str)], https: bool) -> TestGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tapgate");
        let addr = listener.local_addr().expect("tapgate address");
        let gate = if https {
            Gate::behind_tls(addr)
        } else {
            Gate::new(addr)
        };
        let store: DynStore = Arc::new(SqliteStore::memory().await.expect("in-memory store"));
        TestGate::start_on_store(listener, gate, store, extra_toml, env).await
    }

    /// Like [`TestGate::start_with`], on a store the test made (a SQLite
    /// file it can also read directly, say).
    pub async fn start_on(store: DynStore, extra_toml: &str, env: &[(&str, &str)]) -> TestGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tapgate");
        let addr = listener.local_addr().expect("tapgate address");
        TestGate::start_on_store(listener, Gate::new(addr), store, extra_toml, env).await
    }

    async fn start_on_store(
        listener: tokio::net::TcpListener,
        gate: Gate,
        store: DynStore,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> TestGate {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The suites make many ceremonies from 127.0.0.1 in a few seconds:
        // rate limits are off unless a test names them (tests/abuse.rs).
        if !extra_toml.contains("[limits]")
            && !env.iter().any(|(k, _)| k.starts_with("TAPGATE_LIMITS__"))
        {
            env.push(("TAPGATE_LIMITS__ENABLED".into(), "false".into()));
        }
        let shared = Shared {
            extra_toml: extra_toml.to_owned(),
            env,
            key_pem: SigningKey::generate_pem(),
            store,
        };
        TestGate::serve(listener, gate, shared).await
    }

    /// Another instance behind the same public URL, sharing the store and
    /// the signing key (what a second Cloud Run instance is).
    pub async fn sibling(&self) -> TestGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tapgate");
        let addr = listener.local_addr().expect("tapgate address");
        let mut gate = Gate::new(addr);
        gate.origin = self.gate.origin.clone();
        gate.cookie_name = self.gate.cookie_name.clone();
        TestGate::serve(listener, gate, self.shared.clone()).await
    }

    async fn serve(listener: tokio::net::TcpListener, gate: Gate, shared: Shared) -> TestGate {
        let upstream = Upstream::start().await;
        let toml = format!(
            "public_url = \"{public}\"\nupstream = \"{up}\"\n{extra}\n\
             [store]\nurl = \"sqlite::memory:\"\n[keys]\nsigning_key_file = \"/unused\"\n",
            public = gate.origin,
            up = upstream.url(),
            extra = shared.extra_toml,
        );
        let config = Config::from_sources(Mode::Serve, Some(&toml), &shared.env)
            .unwrap_or_else(|e| panic!("test config:\n{toml}\n{e}"));
        let key = SigningKey::from_pem(&shared.key_pem).expect("signing key");
        let app = App::with_parts(config, key, shared.store.clone()).expect("assemble the app");
        // The serving stack of `tapgate serve`: its serve loop and front.
        let serving = app.clone();
        let task = tokio::spawn(async move {
            let _ = serve_until(listener, serving, std::future::pending()).await;
        });
        TestGate {
            gate,
            app,
            upstream,
            shared,
            task,
        }
    }

    /// A fresh invite token for `email` with `roles`, valid for an hour.
    pub async fn invite(&self, email: &str, roles: &[&str]) -> String {
        self.invite_at(email, roles, now_unix(), Duration::from_secs(3600))
            .await
    }

    /// An invite created at `now` (in the past for an expired one).
    pub async fn invite_at(&self, email: &str, roles: &[&str], now: u64, ttl: Duration) -> String {
        let roles = roles
            .iter()
            .map(|r| Role::parse(r).expect("role"))
            .collect();
        let made = tapgate::invite::create(
            self.app.store.as_ref(),
            &self.gate.origin,
            Email::parse(email).expect("email"),
            roles,
            ttl,
            "test",
            now,
        )
        .await
        .expect("create invite");
        assert!(
            made.url
                .starts_with(&format!("{}/.tapgate/register?invite=", self.gate.origin))
        );
        invite_token(&made.url)
    }

    /// A registered user with a fresh key: (key, session).
    pub async fn user(&self, email: &str, roles: &[&str]) -> (SoftKey, Session) {
        let invite = self.invite(email, roles).await;
        let mut key = SoftKey::new();
        let session = self.register(&mut key, &invite).await;
        (key, session)
    }

    /// Re-sign a ceremony state after `edit` (what only the server can do):
    /// used to make an expired one.
    pub fn reseal(
        &self,
        sealed: &str,
        edit: impl FnOnce(&mut tapgate::token::CeremonyState),
    ) -> String {
        let mut state: tapgate::token::CeremonyState =
            serde_json::from_value(jwt_payload(sealed)).expect("ceremony state");
        edit(&mut state);
        self.app.keys.seal_ceremony(&state)
    }
}

impl TestGate {
    /// The audit events named `name` this gate has recorded so far.
    pub fn audit_events(&self, name: &str) -> Vec<tapgate::audit::AuditEvent> {
        self.app
            .audit
            .captured()
            .into_iter()
            .filter(|e| e.event == name)
            .collect()
    }

    /// A session token for the same user as `session`, issued by this gate
    /// at `iat` for `ttl` seconds and with the last tap at `auth_time`.
    pub fn session_at(&self, session: &Session, iat: u64, ttl: u64, auth_time: u64) -> Session {
        let claims: tapgate::token::SessionClaims =
            serde_json::from_value(jwt_payload(&session.token)).expect("session claims");
        let mut principal = claims.principal();
        principal.auth_time = auth_time;
        let (token, _) = self
            .app
            .keys
            .issue_session(&principal, claims.ep, claims.nk, iat, ttl);
        Session {
            token,
            body: session.body.clone(),
            cookie_name: session.cookie_name.clone(),
        }
    }
}

/// Verify an `X-Tapgate-Assertion` the way an upstream would: fetch the JWK
/// Set, pick the key by `kid`, check ES256, issuer and audience.
pub async fn verify_assertion(gate: &Gate, jwt: &str) -> Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
    let jwks = gate.get("/.tapgate/jwks.json", &[]).await.ok_json();
    let set: JwkSet = serde_json::from_value(jwks).expect("a standard JWK Set");
    let header = jsonwebtoken::decode_header(jwt).expect("JWT header");
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("assertion names its kid");
    let jwk = set.find(&kid).expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("JWK to key");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[&gate.origin]);
    v.set_issuer(&[&gate.origin]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v)
        .unwrap_or_else(|e| panic!("assertion does not verify with the JWKS: {e}"))
        .claims
}

/// The payload of a JWT, decoded but not verified.
pub fn jwt_payload(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&base64url_decode(payload).expect("payload base64url"))
        .expect("payload JSON")
}

// ---------------------------------------------------------------- authenticator

/// How the client data (what a browser writes about the ceremony) and the
/// signing RP differ from an honest browser at the public origin.
#[derive(Clone, Debug, Default)]
pub struct ClientData {
    /// `origin` in clientDataJSON.
    pub origin: Option<String>,
    /// `crossOrigin` in clientDataJSON.
    pub cross_origin: Option<bool>,
    /// `topOrigin` in clientDataJSON.
    pub top_origin: Option<String>,
    /// The RP id the authenticator signs for (authenticatorData.rpIdHash).
    pub rp_id: Option<String>,
}

impl ClientData {
    fn is_honest(&self) -> bool {
        self.origin.is_none()
            && self.cross_origin.is_none()
            && self.top_origin.is_none()
            && self.rp_id.is_none()
    }

    fn json(&self, ty: &str, challenge: &str, origin: &str) -> String {
        let mut cd = serde_json::Map::new();
        cd.insert("type".into(), ty.into());
        cd.insert("challenge".into(), challenge.into());
        cd.insert(
            "origin".into(),
            self.origin.as_deref().unwrap_or(origin).into(),
        );
        cd.insert(
            "crossOrigin".into(),
            self.cross_origin.unwrap_or(false).into(),
        );
        if let Some(t) = &self.top_origin {
            cd.insert("topOrigin".into(), t.as_str().into());
        }
        Value::Object(cd).to_string()
    }
}

/// The user's side of the authenticator: presence always, verification
/// (PIN, biometric) only if the key has it.
struct User {
    uv: bool,
}

#[async_trait::async_trait]
impl UserValidationMethod for User {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        _verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck {
            presence,
            verification: self.uv,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        self.uv.then_some(true)
    }
}

/// A software passkey holding at most one credential.
#[derive(Clone)]
pub struct SoftKey {
    passkey: Option<Passkey>,
    /// Whether the key can verify its user (PIN/biometric).
    pub uv: bool,
    /// Whether new credentials keep a signature counter.
    pub counter: bool,
}

impl Default for SoftKey {
    fn default() -> Self {
        SoftKey::new()
    }
}

impl SoftKey {
    pub fn new() -> SoftKey {
        SoftKey {
            passkey: None,
            uv: true,
            counter: false,
        }
    }

    /// A key without user verification (a plain security key with no PIN):
    /// the client then asks it for presence only.
    pub fn without_uv() -> SoftKey {
        SoftKey {
            passkey: None,
            uv: false,
            counter: false,
        }
    }

    /// A key whose credentials count their signatures (a security key
    /// rather than a synced passkey), so a clone can be detected.
    pub fn with_counter() -> SoftKey {
        SoftKey {
            counter: true,
            ..SoftKey::new()
        }
    }

    pub fn credential_id(&self) -> Option<Vec<u8>> {
        self.passkey.as_ref().map(|p| p.credential_id.to_vec())
    }

    /// `navigator.credentials.create({publicKey})` at `origin`, as
    /// `PublicKeyCredential.toJSON()` returns it.
    pub async fn create(&mut self, origin: &str, public_key: &Value, cd: &ClientData) -> Value {
        let mut pk = public_key.clone();
        if !self.uv {
            pk["authenticatorSelection"]["userVerification"] = "discouraged".into();
        }
        let mut client_origin = origin.to_owned();
        if let Some(rp) = &cd.rp_id {
            pk["rp"]["id"] = rp.as_str().into();
            client_origin = format!("https://{rp}");
        }
        let challenge = pk["challenge"].as_str().expect("challenge").to_owned();
        let options: CredentialCreationOptions =
            serde_json::from_value(json!({ "publicKey": pk })).expect("creation options parse");
        let url = url::Url::parse(&client_origin).expect("origin URL");
        let mut authenticator = Authenticator::new(
            Aaguid(AAGUID),
            self.passkey.clone(),
            User { uv: self.uv },
            passkey_crypto::rust_crypto::RustCryptoBackend,
        );
        authenticator.set_make_credentials_with_signature_counter(self.counter);
        let mut client = Client::new(authenticator).allows_insecure_localhost(true);
        let (resp, client_data_json) = if cd.is_honest() {
            let r = client
                .register(&url, options, DefaultClientData)
                .await
                .unwrap_or_else(|e| panic!("authenticator refused to register: {e:?}"));
            let cdj = r.response.client_data_json.to_vec();
            (r, cdj)
        } else {
            let cdj = cd.json("webauthn.create", &challenge, origin);
            let r = client
                .register(
                    &url,
                    options,
                    DefaultClientDataWithCustomHash(sha256(cdj.as_bytes())),
                )
                .await
                .unwrap_or_else(|e| panic!("authenticator refused to register: {e:?}"));
            (r, cdj.into_bytes())
        };
        self.passkey = client.authenticator().store().clone();
        let transports: Vec<Value> = resp
            .response
            .transports
            .iter()
            .flatten()
            .map(|t| serde_json::to_value(t).expect("transport"))
            .collect();
        json!({
            "id": resp.id,
            "rawId": base64url(&resp.raw_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": base64url(&client_data_json),
                "attestationObject": base64url(&resp.response.attestation_object),
                "authenticatorData": base64url(&resp.response.authenticator_data),
                "transports": transports,
                "publicKeyAlgorithm": resp.response.public_key_algorithm,
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
    }

    /// `navigator.credentials.get({publicKey})` at `origin`, as
    /// `PublicKeyCredential.toJSON()` returns it.
    pub async fn get(&mut self, origin: &str, public_key: &Value, cd: &ClientData) -> Value {
        let mut pk = public_key.clone();
        if !self.uv {
            pk["userVerification"] = "discouraged".into();
        }
        let mut client_origin = origin.to_owned();
        if let Some(rp) = &cd.rp_id {
            pk["rpId"] = rp.as_str().into();
            client_origin = format!("https://{rp}");
        }
        let challenge = pk["challenge"].as_str().expect("challenge").to_owned();
        let options: CredentialRequestOptions =
            serde_json::from_value(json!({ "publicKey": pk })).expect("request options parse");
        let url = url::Url::parse(&client_origin).expect("origin URL");
        let authenticator = Authenticator::new(
            Aaguid(AAGUID),
            self.passkey.clone(),
            User { uv: self.uv },
            passkey_crypto::rust_crypto::RustCryptoBackend,
        );
        let mut client = Client::new(authenticator).allows_insecure_localhost(true);
        let (resp, client_data_json) = if cd.is_honest() {
            let r = client
                .authenticate(&url, options, DefaultClientData)
                .await
                .unwrap_or_else(|e| panic!("authenticator refused to sign in: {e:?}"));
            let cdj = r.response.client_data_json.to_vec();
            (r, cdj)
        } else {
            let cdj = cd.json("webauthn.get", &challenge, origin);
            let r = client
                .authenticate(
                    &url,
                    options,
                    DefaultClientDataWithCustomHash(sha256(cdj.as_bytes())),
                )
                .await
                .unwrap_or_else(|e| panic!("authenticator refused to sign in: {e:?}"));
            (r, cdj.into_bytes())
        };
        self.passkey = client.authenticator().store().clone();
        let mut response = json!({
            "clientDataJSON": base64url(&client_data_json),
            "authenticatorData": base64url(&resp.response.authenticator_data),
            "signature": base64url(&resp.response.signature),
        });
        if let Some(h) = &resp.response.user_handle {
            response["userHandle"] = base64url(h).into();
        }
        json!({
            "id": resp.id,
            "rawId": base64url(&resp.raw_id),
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
    }
}

/// Replace `response.clientDataJSON` (already signed over) — for tests that
/// must show the signature binds it.
pub fn with_client_data(credential: &Value, client_data_json: &str) -> Value {
    let mut c = credential.clone();
    c["response"]["clientDataJSON"] = base64url(client_data_json.as_bytes()).into();
    c
}

/// The decoded clientDataJSON of a credential response.
pub fn client_data_of(credential: &Value) -> Value {
    let raw = base64url_decode(
        credential["response"]["clientDataJSON"]
            .as_str()
            .expect("cdj"),
    )
    .expect("cdj base64url");
    serde_json::from_slice(&raw).expect("cdj JSON")
}

/// Send `request` (a complete HTTP/1.1 request; add `Connection: close`)
/// as raw bytes — for paths an URL library would normalise — and return
/// the status code and the whole answer.
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, answer)
}
