//! Binds and builds THE router. `/.tapgate/*` are tapgate's own pages and
//! APIs; every other path goes through the gate to the upstream. The layer
//! order is in [`router`], one comment each.

use crate::audit::Audit;
use crate::config::{Config, KeySource, Upstream as UpstreamConfig};
use crate::error::HttpError;
use crate::policy::Policy;
use crate::store::DynStore;
use crate::token::{KeyRing, SessionCache, SigningKey};
use crate::upstream::{Identity, Upstream};
use crate::{gate, login, pages};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a request may need, built once at start.
pub struct App {
    pub config: Config,
    pub keys: KeyRing,
    pub sessions: SessionCache,
    pub store: DynStore,
    pub audit: Audit,
    /// Swapped atomically on reload (SIGHUP); readers never wait.
    pub policy: arc_swap::ArcSwap<Policy>,
    /// Attestation roots, swapped together with the policy on reload.
    pub trust: arc_swap::ArcSwap<tapgate_webauthn::TrustStore>,
    /// Revoked sessions, refreshed from the store's feed every second and
    /// swapped atomically; the gate reads it on every request.
    pub revocations: arc_swap::ArcSwap<crate::revocation::Revocations>,
    pub revocation_feed: crate::revocation::FeedHealth,
    /// `None` until the demo's echo app is bound (then always `Some`).
    pub upstream: Option<Upstream>,
    pub identity: Identity,
    pub rp: tapgate_webauthn::RelyingParty,
    pub cookie_name: &'static str,
    /// Ceremony rate limits, per client address and per account.
    pub limits: crate::ratelimit::Limits,
}

/// Per-request context, the only state shared across layers.
#[derive(Clone, Debug, Default)]
pub struct RequestCtx {
    pub id: String,
    /// `limits.trusted_proxies`, so that audit events name the client
    /// (from `X-Forwarded-For`) rather than the proxy in front.
    pub trusted_proxies: usize,
    /// A browser navigation (GET or HEAD accepting HTML): refusals send it
    /// to a page rather than answer with JSON.
    pub navigation: bool,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Load or create the signing key named by the config.
pub fn load_key(source: &KeySource) -> Result<SigningKey, StartError> {
    let pem = match source {
        KeySource::Pem(pem) => pem.clone(),
        KeySource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| StartError::Key(format!("cannot read {}: {e}", path.display())))?,
        KeySource::GenerateInto(path) => match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = SigningKey::generate_pem();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StartError::Key(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                write_private(path, &pem).map_err(|e| {
                    StartError::Key(format!("cannot write {}: {e}", path.display()))
                })?;
                pem
            }
            Err(e) => {
                return Err(StartError::Key(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        },
    };
    SigningKey::from_pem(&pem).map_err(|e| StartError::Key(e.to_string()))
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(content.as_bytes())
}

impl App {
    /// Build the application state: key, store, policy, upstream client.
    pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
        let key = load_key(&config.signing_key)?;
        let store = crate::store::open_config(&config).await?;
        App::with_parts(config, key, store)
    }

    pub fn with_parts(
        config: Config,
        key: SigningKey,
        store: DynStore,
    ) -> Result<Arc<App>, StartError> {
        let upstream = match &config.upstream {
            UpstreamConfig::Url(u) => Some(
                Upstream::new(u, config.proxy_timeout, config.proxy_connect_timeout)
                    .map_err(StartError::Upstream)?,
            ),
            UpstreamConfig::Echo => None,
        };
        let app = Arc::new(App::assemble(config, key, store, upstream));
        follow_revocations(&app);
        app.audit.persist(app.store.clone());
        Ok(app)
    }

    pub fn assemble(
        config: Config,
        key: SigningKey,
        store: DynStore,
        upstream: Option<Upstream>,
    ) -> App {
        let keys = KeyRing::new(key, Vec::new(), config.public_origin.clone());
        let rp = tapgate_webauthn::RelyingParty {
            id: config.rp_id.clone(),
            origins: vec![config.public_origin.clone()],
            user_verification: config.user_verification,
        };
        let identity = Identity {
            iap: config.iap_headers,
            oauth2_proxy: config.oauth2_proxy_headers,
            forwarded_proto: if config.secure { "https" } else { "http" },
            session_cookie: if config.secure {
                "__Host-tapgate_session"
            } else {
                "tapgate_session"
            },
        };
        App {
            policy: arc_swap::ArcSwap::from_pointee(policy_of(&config)),
            trust: arc_swap::ArcSwap::from_pointee(config.trust.store()),
            revocations: arc_swap::ArcSwap::from_pointee(Default::default()),
            revocation_feed: Default::default(),
            cookie_name: identity.session_cookie,
            identity,
            keys,
            sessions: SessionCache::default(),
            store,
            audit: Audit::new(instance_id()),
            limits: crate::ratelimit::Limits::new(&config.limits),
            upstream,
            rp,
            config,
        }
    }
}

/// Read the revocation feed now and then every second, for as long as the
/// app lives (the task holds only a weak reference). Needs a Tokio runtime;
/// without one (never the case when serving) nothing is followed.
pub fn follow_revocations(app: &Arc<App>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(app);
    let changes = app.store.changes();
    runtime.spawn(async move {
        use crate::revocation::{FALLBACK_EVERY, REFRESH_EVERY};
        loop {
            // Read as soon as the store signals a new entry; poll as well,
            // fast while signals are not flowing (SQLite, or the PostgreSQL
            // listener reconnecting), slowly as a fallback while they are.
            let every = if changes.is_live() {
                FALLBACK_EVERY
            } else {
                REFRESH_EVERY
            };
            tokio::select! {
                _ = changes.wait() => {}
                _ = tokio::time::sleep(every) => {}
            }
            let Some(app) = weak.upgrade() else { break };
            // Failures are logged (once per outage) inside; the last known
            // set stays in force.
            let _ = app.refresh_revocations().await;
        }
    });
}

impl App {
    /// One read of the revocation feed (the background task calls this
    /// every second; tests may call it to skip the wait).
    pub async fn refresh_revocations(&self) -> Result<usize, crate::store::StoreError> {
        crate::revocation::refresh(
            self.store.as_ref(),
            &self.revocations,
            &self.revocation_feed,
            now_unix(),
            crate::revocation::retention(self.config.session_ttl),
        )
        .await
    }
}

/// Compile the policy a configuration describes (at start and on reload).
pub fn policy_of(config: &Config) -> Policy {
    let store = config.trust.store();
    let trust = crate::policy::Trust {
        roots: store
            .fingerprints()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        aaguids: config.trust.allowed_aaguids.clone(),
        global: config.trust.global,
    };
    Policy::new(config.routes.clone(), trust)
}

fn instance_id() -> String {
    // Cloud Run names the revision; the tag tells instances apart.
    let rev = std::env::var("K_REVISION").unwrap_or_else(|_| "local".into());
    format!("{rev}-{}", instance_tag())
}

/// Eight characters that tell this process apart from others (logs, request
/// ids). Not a secret, so derived from pid and start time rather than the
/// CSPRNG: seeding aws-lc's DRBG costs ~11 ms, which a cold start that needs
/// no randomness should not pay before its first answer.
pub fn instance_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}-{nanos}", std::process::id());
        tapgate_webauthn::base64url(&crate::crypto::sha256(seed.as_bytes())[..6])
    })
}

/// A request id: the instance tag and a counter. Unique across instances
/// (in practice) and cheap: no allocation beyond the string, no RNG.
pub fn next_request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    request_id(
        instance_tag(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
}

/// "{tag}{n:x}", written without the formatting machinery: it runs on
/// every request.
fn request_id(tag: &str, n: u64) -> String {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    let mut id = String::with_capacity(tag.len() + digits as usize);
    id.push_str(tag);
    for shift in (0..digits).rev() {
        id.push(char::from(
            b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize],
        ));
    }
    id
}

/// THE router. Layers wrap from the inside out: the last `.layer` runs first.
pub fn router(app: Arc<App>) -> Router {
    use crate::admin::api as admin;
    use crate::login::account;
    let ceremonies = Router::new()
        // New user from an invite, or another key for an existing one.
        .route("/register/options", post(login::register_options_any))
        .route("/register/verify", post(login::register_verify_any))
        .route("/login/options", post(login::login_options))
        .route("/login/verify", post(login::login_verify))
        // Before the body is read: counted per client address (429);
        // oversized headers (431) or declared body (413) refused.
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            crate::ratelimit::ceremony_guard,
        ));
    let api = Router::new()
        .merge(ceremonies)
        .route("/me", get(login::me))
        // The signed-in user's own keys.
        .route("/account", get(account::account))
        .route("/account/keys/{id}/rename", post(account::rename))
        .route("/account/keys/{id}/revoke", post(account::revoke))
        .route("/account/sessions/revoke", post(account::revoke_sessions))
        .route("/account/device-link", post(account::device_link))
        // Administration; every handler checks the admin role itself.
        .route("/admin/users", get(admin::users))
        .route("/admin/users/{subject}/disable", post(admin::disable))
        .route("/admin/users/{subject}/enable", post(admin::enable))
        .route(
            "/admin/users/{subject}/sessions/revoke",
            post(admin::revoke_sessions),
        )
        .route("/admin/users/{subject}/roles", post(admin::roles))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route(
            "/admin/invites",
            get(admin::invites).post(admin::create_invite),
        )
        .route("/admin/invites/{id}/cancel", post(admin::cancel_invite))
        // Ceremony bodies are small; refuse anything larger before parsing.
        .layer(DefaultBodyLimit::max(64 * 1024));

    let own = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/jwks.json", get(jwks))
        .route("/login", get(|| async { pages::page(pages::LOGIN) }))
        .route("/register", get(|| async { pages::page(pages::REGISTER) }))
        .route("/account", get(|| async { pages::page(pages::ACCOUNT) }))
        .route("/admin", get(|| async { pages::page(pages::ADMIN) }))
        .route("/static/{file}", get(static_asset))
        .route("/logout", post(login::logout))
        .route("/auth", any(gate::forward_auth))
        .nest("/api", api)
        .fallback(|| async { HttpError::not_found() })
        .method_not_allowed_fallback(|| async {
            HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "This endpoint does not accept that HTTP method; see docs/api.md.",
            )
        })
        // State-changing requests to our own endpoints must come from our
        // own pages (or from a non-browser client): CSRF defence.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            same_origin_writes,
        ));

    Router::new()
        .nest("/.tapgate", own)
        // Everything else: session → policy → upstream.
        .fallback(gate::proxy)
        // Outermost: request id, error rendering (JSON or page), access
        // log; and in the demo, serve only under the public host name
        // (WebAuthn needs it). One layer: every request pays for each.
        .layer(middleware::from_fn_with_state(app.clone(), request_context))
        .with_state(app)
}

/// Refusals made before a tapgate handler runs (body reader, size limit,
/// same-origin check): the handlers audit everything after that point, so
/// these are audited here, or a hostile request would leave no trace.
const REFUSED_BEFORE_HANDLER: &[&str] = &[
    "invalid-json",
    "invalid-request",
    "json-content-type-required",
    "body-too-large",
    "headers-too-large",
    "cross-origin-request",
];

async fn request_context(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let (started, ctx) = Started::begin(&app, &req);
    req.extensions_mut().insert(ctx);
    let response = match canonical_host(&app, &req) {
        Some(redirect) => redirect,
        None => next.run(req).await,
    };
    started.finish(&app, response)
}

/// What the outermost layer notes about a request before it is handled,
/// to log it and render its error (if any) afterwards.
struct Started {
    id_header: HeaderValue,
    wants_html: bool,
    method: Method,
    uri: axum::http::Uri,
    start: Instant,
    /// For a POST to our own endpoints: the client's address and user
    /// agent, for the audit line of a refusal made before the handler.
    client: Option<(Option<String>, Option<String>)>,
}

impl Started {
    /// The request id (into the returned context, for handlers, and the
    /// response header) and what [`Started::finish`] needs.
    fn begin(app: &App, req: &Request) -> (Started, RequestCtx) {
        // The id is base64url and hex, so always a valid header value.
        let id = next_request_id();
        let id_header = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"));
        let method = req.method().clone();
        // A clone of the parsed URI shares its bytes: no copy of the path.
        let uri = req.uri().clone();
        let own_write = method == Method::POST && uri.path().starts_with("/.tapgate/");
        let trusted_proxies = app.limits.trusted_proxies();
        let client = own_write.then(|| {
            let ip = req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| {
                    crate::ratelimit::client_addr(req.headers(), c.0.ip(), trusted_proxies)
                        .to_string()
                });
            let ua = req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect::<String>());
            (ip, ua)
        });
        let navigation = gate::is_navigation(&method, req.headers());
        let started = Started {
            id_header,
            wants_html: navigation,
            method,
            uri,
            start: Instant::now(),
            client,
        };
        (
            started,
            RequestCtx {
                id,
                trusted_proxies,
                navigation,
            },
        )
    }

    /// Render an error the handler returned (JSON or page), audit a
    /// refusal made before a handler, log, and name the request id.
    fn finish(self, app: &App, mut response: Response) -> Response {
        let Started {
            id_header,
            wants_html,
            method,
            uri,
            start,
            client,
        } = self;
        let path = uri.path();
        let id = id_header.to_str().unwrap_or("-");
        if let Some(err) = response.extensions_mut().remove::<HttpError>() {
            if let Some((ip, user_agent)) = client
                && REFUSED_BEFORE_HANDLER.contains(&err.code)
            {
                let mut ev = crate::audit::AuditEvent::new(
                    "request_refused",
                    crate::audit::Outcome::Failure,
                );
                ev.reason = Some(err.code.to_owned());
                ev.route = Some(path.to_owned());
                ev.ip = ip;
                ev.user_agent = user_agent;
                ev.request_id = Some(id.to_owned());
                app.audit.record(ev);
            }
            let level_detail = err.internal.as_deref().unwrap_or("");
            match err.fault {
                crate::error::Fault::Client => {
                    tracing::info!(request_id = %id, %method, %path, status = err.status.as_u16(), code = err.code, "request refused")
                }
                _ => {
                    tracing::warn!(request_id = %id, %method, %path, status = err.status.as_u16(), code = err.code, detail = level_detail, fault = ?err.fault, "request failed")
                }
            }
            let mut rendered = if wants_html {
                let title = match err.status {
                    StatusCode::FORBIDDEN => "Access denied",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
                        "The service is not answering"
                    }
                    s if s.is_server_error() => "Something went wrong",
                    _ => "This request cannot be completed",
                };
                let action = if err.status == StatusCode::FORBIDDEN {
                    ("/.tapgate/account", "Your account")
                } else {
                    ("/", "Go to the start page")
                };
                pages::error_page(err.status, title, &err.message, id, action)
            } else {
                let mut r = (
                    err.status,
                    [(header::CONTENT_TYPE, "application/json")],
                    crate::error::json_body(err.code, &err.message, id),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            };
            for (k, v) in err.headers {
                rendered.headers_mut().append(k, v);
            }
            response = rendered;
        }
        tracing::debug!(request_id = %id, %method, %path, status = response.status().as_u16(), micros = start.elapsed().as_micros() as u64, "request");
        response
            .headers_mut()
            .insert(crate::upstream::names::X_REQUEST_ID, id_header);
        response
    }
}

/// What every connection is served by. A request for any path but
/// tapgate's own goes straight to the gate (`gate::proxy_request`), with
/// the same request id, error rendering and log line as the router's
/// outermost layer gives; that skips the route match and the boxed
/// middleware for the requests that are most of the traffic. Tapgate's own
/// paths, and every path in the demo (which redirects other host names to
/// the public one first), go through [`router`].
#[derive(Clone)]
pub struct Front {
    app: Arc<App>,
    router: Router,
}

impl Front {
    pub fn new(app: Arc<App>) -> Front {
        Front {
            router: router(app.clone()),
            app,
        }
    }
}

/// `/.tapgate` and everything under `/.tapgate/`: what the router nests.
fn is_own_path(path: &str) -> bool {
    path.strip_prefix("/.tapgate")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What [`Front`] answers with: a boxed future, as axum's router's is.
pub type FrontFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl Front {
    /// One request from a client at `peer`. Proxied requests take the peer
    /// as an argument; only the router's handlers read it from the
    /// request's extensions, so only their requests pay for the map.
    pub fn serve(&self, mut req: Request, peer: SocketAddr) -> FrontFuture {
        if self.app.config.canonical_host_redirect || is_own_path(req.uri().path()) {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            return Box::pin(tower::Service::call(&mut self.router.clone(), req));
        }
        let app = self.app.clone();
        Box::pin(async move {
            let (started, ctx) = Started::begin(&app, &req);
            let response = gate::proxy_request(&app, peer, ctx, req).await;
            Ok(started.finish(&app, response))
        })
    }
}

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = FrontFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// For callers that put the peer into the extensions themselves (the
    /// tests); without one the peer is 0.0.0.0:0.
    fn call(&mut self, req: Request) -> Self::Future {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        self.serve(req, peer)
    }
}

/// Demo: a request under another host name (e.g. 127.0.0.1) is sent to
/// the public origin.
fn canonical_host(app: &App, req: &Request) -> Option<Response> {
    if !app.config.canonical_host_redirect {
        return None;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    if name == app.config.public_host {
        return None;
    }
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{}", app.config.public_origin, pq);
    let v = HeaderValue::from_str(&location).ok()?;
    Some((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response())
}

async fn same_origin_writes(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST
        || req.method() == Method::PUT
        || req.method() == Method::DELETE
        || req.method() == Method::PATCH
    {
        let h = req.headers();
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let cross = match origin {
            Some(o) => o != app.config.public_origin,
            // No Origin: a non-browser client, or a browser telling us the site.
            None => matches!(site, Some("cross-site" | "same-site")),
        };
        if cross {
            return HttpError::forbidden(
                "cross-origin-request",
                format!(
                    "This request came from another site. Open {} directly and try again.",
                    app.config.public_origin
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(e)) => HttpError::store_unavailable(e.to_string()).into_response(),
        Err(_) => HttpError::store_unavailable("ping timed out").into_response(),
    }
}

async fn jwks(State(app): State<Arc<App>>) -> Response {
    let mut r = axum::Json(app.keys.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn static_asset(Path(file): Path<String>) -> Response {
    pages::asset(&file).unwrap_or_else(|| HttpError::not_found().into_response())
}

/// Serve until Ctrl-C / SIGTERM (Cloud Run sends SIGTERM, then waits):
/// then stop accepting, finish the requests in flight and return. Slow and
/// idle clients are cut off by the `[server]` limits (crate::connections).
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    serve_until(listener, app, shutdown_signal()).await
}

/// [`serve`] until `shutdown` resolves (tests serve this way).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = app.config.server;
    crate::connections::serve(listener, Front::new(app), limits, shutdown).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::{is_own_path, request_id};

    #[test]
    fn request_ids_are_the_tag_and_the_counter_in_hex() {
        for n in [0, 1, 9, 10, 15, 16, 255, 256, 0xdead_beef, u64::MAX] {
            assert_eq!(request_id("tag", n), format!("tag{n:x}"), "{n}");
        }
    }

    #[test]
    fn own_paths_are_what_the_router_nests_under_dot_tapgate() {
        for own in [
            "/.tapgate",
            "/.tapgate/",
            "/.tapgate/auth",
            "/.tapgate/api/me",
        ] {
            assert!(is_own_path(own), "{own}");
        }
        // Everything else is the upstream's (and goes through the gate,
        // which refuses the encoded and doubled forms itself).
        for other in [
            "/",
            "/.tapgatex",
            "/.tapgate.json",
            "/app/.tapgate/auth",
            "//.tapgate/auth",
            "/.tapgate%2fauth",
            "/.TAPGATE/auth",
        ] {
            assert!(!is_own_path(other), "{other}");
        }
    }
}
