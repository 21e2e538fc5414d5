//! Forwarding to the upstream: strip what the client must not be able to
//! assert (identity headers, our cookie and bearer token, hop-by-hop
//! headers), add the identity we vouch for, stream both bodies, and carry
//! WebSocket (any `Upgrade`) connections. Needs a [`Permitted`].

use crate::error::HttpError;
use crate::policy::Permitted;
use crate::token::CachedSession;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Header names of the hot path, parsed once: a name given as `&str` is
/// parsed and validated again on every use.
pub mod names {
    use axum::http::HeaderName;
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_TAPGATE_USER: HeaderName = HeaderName::from_static("x-tapgate-user");
    pub const X_TAPGATE_EMAIL: HeaderName = HeaderName::from_static("x-tapgate-email");
    pub const X_TAPGATE_ROLES: HeaderName = HeaderName::from_static("x-tapgate-roles");
    pub const X_TAPGATE_ASSERTION: HeaderName = HeaderName::from_static("x-tapgate-assertion");
    pub const X_AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
    pub const X_AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
    pub const X_AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
    pub const X_GOOG_USER_EMAIL: HeaderName =
        HeaderName::from_static("x-goog-authenticated-user-email");
    pub const X_GOOG_USER_ID: HeaderName = HeaderName::from_static("x-goog-authenticated-user-id");
    pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
}

pub struct Upstream {
    /// Idle keep-alive connections, one pool per serving thread
    /// (crate::connections::worker_index): a request borrows a connection
    /// its own thread drives, and the lock is never contended.
    pools: Arc<Vec<Mutex<VecDeque<Idle>>>>,
    /// Host and port to connect to (resolved on every new connection).
    host: String,
    port: u16,
    /// Path prefix of the upstream URL without trailing '/' ("" for none).
    base_path: String,
    host_header: HeaderValue,
    timeout: Duration,
    connect_timeout: Duration,
}

/// An HTTP/1 connection to the upstream that can take a request, and when
/// it was last given back.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection unused this long is closed (the upstream's own keep-alive
/// timeout is usually shorter, and then it is gone already).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per serving thread; more are closed.
const MAX_IDLE: usize = 1024;

/// Why a request could not be sent, for [`Upstream::forward`]'s 502 / 504.
enum SendError {
    Connect(String),
    Request(hyper::Error),
}

/// What the gate knows about the request, for the forwarded headers.
pub struct Forward<'a> {
    pub permitted: Permitted,
    pub session: Option<&'a CachedSession>,
    pub assertion: Option<HeaderValue>,
    pub client_addr: SocketAddr,
    pub request_id: &'a str,
    /// Whether the session came from `Authorization: Bearer` (then strip it).
    pub bearer_used: bool,
}

pub struct Identity {
    pub iap: bool,
    pub oauth2_proxy: bool,
    pub forwarded_proto: &'static str,
    pub session_cookie: &'static str,
}

impl Upstream {
    pub fn new(
        url: &url::Url,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Upstream, String> {
        if url.scheme() != "http" {
            return Err(format!(
                "upstream URL: only http:// is supported, not {}://",
                url.scheme()
            ));
        }
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| format!("upstream URL: {e}"))?;
        let authority = uri.authority().cloned().ok_or("upstream URL has no host")?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        // `[::1]` in a URL is the address `::1`.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let pools = (0..crate::connections::worker_count())
            .map(|_| Mutex::new(VecDeque::new()))
            .collect();
        Ok(Upstream {
            pools: Arc::new(pools),
            host,
            port: authority.port_u16().unwrap_or(80),
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
            timeout,
            connect_timeout,
        })
    }

    /// The path and query to ask the upstream for: the upstream URL's path,
    /// then the request's. Without a base path the request's own go on as
    /// they are (a clone shares their bytes).
    fn target(
        &self,
        requested: Option<&http::uri::PathAndQuery>,
    ) -> Result<http::uri::PathAndQuery, HttpError> {
        match requested {
            Some(pq) if self.base_path.is_empty() => Ok(pq.clone()),
            pq => format!("{}{}", self.base_path, pq.map_or("/", |p| p.as_str()))
                .parse()
                .map_err(|e: http::uri::InvalidUri| {
                    HttpError::bad_request(
                        "bad-request-target",
                        format!("The request path cannot be forwarded: {e}"),
                    )
                }),
        }
    }

    pub async fn forward(
        &self,
        mut req: Request<Body>,
        fwd: Forward<'_>,
        id: &Identity,
    ) -> Result<Response<Body>, HttpError> {
        let _ = fwd.permitted.rule();
        // Origin form ("/path?query"): what an HTTP/1 request line carries.
        let uri = Uri::from(self.target(req.uri().path_and_query())?);

        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let original_host = req.headers().get(header::HOST).cloned();

        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        strip_identity(headers);
        strip_own_credentials(headers, id.session_cookie, fwd.bearer_used);

        // X-Forwarded-*: append the peer to any chain a load balancer set.
        let peer = client_ip_value(fwd.client_addr.ip());
        let chain = headers
            .get(names::X_FORWARDED_FOR)
            .filter(|p| !p.is_empty())
            .map(|prev| {
                let mut xff = Vec::with_capacity(prev.len() + 2 + peer.len());
                xff.extend_from_slice(prev.as_bytes());
                xff.extend_from_slice(b", ");
                xff.extend_from_slice(peer.as_bytes());
                HeaderValue::from_maybe_shared(axum::body::Bytes::from(xff))
            });
        match chain {
            // Two valid values joined by ", ": valid.
            Some(Ok(v)) => headers.insert(names::X_FORWARDED_FOR, v),
            _ => headers.insert(names::X_FORWARDED_FOR, peer),
        };
        headers.insert(
            names::X_FORWARDED_PROTO,
            HeaderValue::from_static(id.forwarded_proto),
        );
        if let Some(h) = original_host {
            headers.insert(names::X_FORWARDED_HOST, h);
        }
        headers.insert(header::HOST, self.host_header.clone());
        if let Ok(v) = HeaderValue::from_str(fwd.request_id) {
            headers.insert(names::X_REQUEST_ID, v);
        }

        if let Some(s) = fwd.session {
            let p = &s.principal;
            // Subjects, emails and roles are validated ASCII at creation;
            // if one ever were not, send no identity rather than a wrong one.
            if let Some(crate::token::IdentityHeaders { user, email, roles }) = s.identity.as_ref()
            {
                let (user, email, roles) = (user.clone(), email.clone(), roles.clone());
                if id.iap {
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("accounts.google.com:{}", p.email))
                    {
                        headers.insert(names::X_GOOG_USER_EMAIL, v);
                    }
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("accounts.google.com:{}", p.subject))
                    {
                        headers.insert(names::X_GOOG_USER_ID, v);
                    }
                }
                if id.oauth2_proxy {
                    headers.insert(names::X_AUTH_REQUEST_USER, user.clone());
                    headers.insert(names::X_AUTH_REQUEST_EMAIL, email.clone());
                    headers.insert(names::X_AUTH_REQUEST_GROUPS, roles.clone());
                }
                headers.insert(names::X_TAPGATE_USER, user);
                headers.insert(names::X_TAPGATE_EMAIL, email);
                headers.insert(names::X_TAPGATE_ROLES, roles);
                if let Some(a) = fwd.assertion {
                    headers.insert(names::X_TAPGATE_ASSERTION, a);
                }
            }
        }
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;

        let response = match tokio::time::timeout(self.timeout, self.send(req)).await {
            Err(_) => {
                return Err(HttpError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    "The service behind tapgate did not answer in time. Try again shortly.",
                    format!("no response headers within {:?}", self.timeout),
                ));
            }
            Ok(Err(e)) => {
                let detail = match e {
                    SendError::Connect(e) => format!("connect: {e}"),
                    SendError::Request(e) => format!("{e:?}"),
                };
                return Err(HttpError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    "The service behind tapgate cannot be reached right now. Try again shortly.",
                    detail,
                ));
            }
            Ok(Ok(r)) => r,
        };

        let (mut parts, body) = response.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let mut upstream_resp = Response::from_parts(parts.clone(), ());
                let upstream_upgrade = hyper::upgrade::on(&mut upstream_resp);
                tokio::spawn(async move {
                    if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                        let mut c = hyper_util::rt::TokioIo::new(c);
                        let mut u = hyper_util::rt::TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                });
                return Ok(Response::from_parts(parts, Body::empty()));
            }
            return Err(HttpError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream-bad-response",
                "The service behind tapgate answered with an unexpected protocol switch.",
                "101 without an upgrade request",
            ));
        }
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

impl Upstream {
    /// Send `req` on an idle connection of this thread's pool, or on a new
    /// one. A request the connection did not take (it had just been closed
    /// by the upstream) is sent again on another; one that was written is
    /// never sent twice.
    async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let pool = crate::connections::worker_index() % self.pools.len();
        loop {
            let (mut sender, reused) = match self.take_idle(pool) {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.give_back(pool, sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The most recently used connection that is still open (a pooled
    /// connection that is not ready has been closed by the upstream);
    /// connections idle for longer than [`IDLE_TIMEOUT`] are closed.
    fn take_idle(&self, pool: usize) -> Option<SendRequest<Body>> {
        let mut idle = self.pools[pool].lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { sender, since }) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Back into the pool once the response body has been read (at once
    /// for a small body, which arrives with the head).
    fn give_back(&self, pool: usize, mut sender: SendRequest<Body>) {
        if sender.is_ready() {
            put(&self.pools[pool], sender);
        } else if !sender.is_closed() {
            let pools = self.pools.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    put(&pools[pool], sender);
                }
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let connect = async {
            let mut last = None;
            for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address")
            }))
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "{}:{}: no connection within {:?}",
                    self.host, self.port, self.connect_timeout
                )));
            }
            Ok(Err(e)) => {
                return Err(SendError::Connect(format!(
                    "{}:{}: {e}",
                    self.host, self.port
                )));
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        // Driven on this thread; it ends when the upstream closes, when the
        // sender is dropped (closed idle, or evicted), or after an upgrade.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}

/// Return a ready connection to a pool (most recent last). The oldest are
/// closed when they have been idle too long or the pool is full.
fn put(pool: &Mutex<VecDeque<Idle>>, sender: SendRequest<Body>) {
    let now = Instant::now();
    let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
    while idle
        .front()
        .is_some_and(|i| idle.len() >= MAX_IDLE || now.duration_since(i.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
    idle.push_back(Idle { sender, since: now });
}

/// The client address as a header value, formatted once per serving
/// thread for the address it last saw: a keep-alive connection, or the load
/// balancer in front, sends many requests from one address.
fn client_ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, value)) if *seen == ip => value.clone(),
        _ => {
            // Digits, dots, colons and hex: always a valid header value.
            let value = HeaderValue::from_str(&ip.to_string()).expect("an IP address is ASCII");
            *last = Some((ip, value.clone()));
            value
        }
    })
}

fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let wants = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// RFC 9110 §7.6.1: connection-specific headers are not forwarded.
///
/// One pass over the names finds the ones to drop, so that a request that
/// carries none (most of them: HTTP/1.1 keep-alive needs no header) costs
/// no hashing at all.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut hop: Vec<HeaderName> = h.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    if hop.is_empty() {
        return;
    }
    if hop.contains(&header::CONNECTION) {
        hop.extend(
            h.get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                // "keep-alive" (what most responses list) names a header
                // already in the list above; no need to parse it again.
                .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    for name in hop {
        h.remove(name);
    }
}

/// The headers RFC 9110 names as connection-specific (and the two that
/// old clients and proxies send).
fn is_hop_by_hop(n: &HeaderName) -> bool {
    static HOP_BY_HOP: [HeaderName; 9] = [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        names::KEEP_ALIVE,
        names::PROXY_CONNECTION,
    ];
    HOP_BY_HOP.contains(n)
}

/// Headers an upstream might read as identity: ours, and those of the
/// proxies tapgate replaces (Google IAP, oauth2-proxy, Authelia, …).
pub fn is_identity_header(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "x-tapgate-",
        "x-auth-request-",
        "x-goog-authenticated-",
        "x-goog-iap-",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "remote-",
    ];
    const EXACT: &[&str] = &["x-remote-user", "x-webauth-user", "x-user", "x-email"];
    // Every one starts with 'x' or 'r': most names are settled by a byte.
    if !name.starts_with(['x', 'r']) {
        return false;
    }
    PREFIXES.iter().any(|p| name.starts_with(p)) || EXACT.contains(&name)
}

pub fn strip_identity(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_identity_header(n.as_str()))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// Remove our session cookie from `Cookie` (keeping the others) and, if the
/// session came as a bearer token, the `Authorization` header.
pub fn strip_own_credentials(h: &mut HeaderMap, cookie_name: &str, bearer_used: bool) {
    if bearer_used || h.get(header::AUTHORIZATION).is_some_and(is_own_bearer) {
        h.remove(header::AUTHORIZATION);
    }
    if !h.contains_key(header::COOKIE) {
        return;
    }
    // The kept cookies, folded into one header, in one allocation.
    let mut kept: Vec<u8> = Vec::new();
    for c in h
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| crate::gate::cookies(v.as_bytes()))
    {
        let name = crate::gate::split_cookie(c)
            .map_or(c, |(n, _)| n)
            .trim_ascii();
        if !c.is_empty()
            && name != cookie_name.as_bytes()
            && !name.starts_with(b"tapgate_")
            && !name.starts_with(b"__Host-tapgate_")
        {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(c);
        }
    }
    h.remove(header::COOKIE);
    // Pieces of valid header values joined by "; ": a valid value.
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_maybe_shared(axum::body::Bytes::from(kept))
    {
        h.insert(header::COOKIE, v);
    }
}

/// A bearer token that is one of our session tokens, even if the request
/// was authenticated by the cookie: the upstream must never receive one
/// (it could replay it).
fn is_own_bearer(v: &HeaderValue) -> bool {
    let Some(token) = v
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer").then_some(t.trim()))
    else {
        return false;
    };
    jsonwebtoken::decode_header(token)
        .is_ok_and(|h| h.typ.as_deref() == Some(crate::token::SESSION_TYP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_recognised() {
        for n in [
            "x-tapgate-user",
            "x-tapgate-assertion",
            "x-auth-request-email",
            "x-goog-authenticated-user-email",
            "x-goog-iap-jwt-assertion",
            "x-forwarded-user",
            "remote-user",
            "x-webauth-user",
        ] {
            assert!(is_identity_header(n), "{n}");
        }
        for n in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "accept",
            "x-request-id",
            "x-cloud-trace-context",
        ] {
            assert!(!is_identity_header(n), "{n}");
        }
    }

    #[test]
    fn the_upstream_path_prefixes_the_requested_one() {
        let t = Duration::from_secs(1);
        let target = |base: &str, requested: &str| {
            let up = Upstream::new(&url::Url::parse(base).unwrap(), t, t).unwrap();
            let pq: http::uri::PathAndQuery = requested.parse().unwrap();
            up.target(Some(&pq)).unwrap().as_str().to_owned()
        };
        assert_eq!(target("http://127.0.0.1:9", "/a/b?x=1"), "/a/b?x=1");
        assert_eq!(target("http://127.0.0.1:9/", "/a?x=1"), "/a?x=1");
        assert_eq!(target("http://127.0.0.1:9/base", "/a?x=1"), "/base/a?x=1");
        assert_eq!(target("http://127.0.0.1:9/base/", "/"), "/base/");
    }

    #[test]
    fn own_cookie_removed_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tapgate_session=secret; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tapgate_ceremony=x"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        strip_own_credentials(&mut h, "tapgate_session", false);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert!(h.get(header::AUTHORIZATION).is_some());
        strip_own_credentials(&mut h, "tapgate_session", true);
        assert!(h.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn hop_by_hop_including_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }
}
