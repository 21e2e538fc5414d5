//! Forwarding to the upstream: strip what the client must not be able to
//! assert (identity headers, our cookie and bearer token, hop-by-hop
//! headers), add the identity we vouch for, stream both bodies, and carry
//! WebSocket (any `Upgrade`) connections. Needs a [`Permitted`].

use crate::error::HttpError;
use crate::policy::Permitted;
use crate::token::CachedSession;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// One pool per serving thread (crate::connections::worker_index), so
    /// that a request never borrows a connection another thread drives.
    clients: Vec<Client<HttpConnector, Body>>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix of the upstream URL without trailing '/' ("" for none).
    base_path: String,
    host_header: HeaderValue,
    timeout: Duration,
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
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let clients = (0..crate::connections::worker_count())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(1024)
                    .build(http.clone())
            })
            .collect();
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| format!("upstream URL: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or("upstream URL has no scheme")?;
        let authority = uri.authority().cloned().ok_or("upstream URL has no host")?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(Upstream {
            clients,
            scheme,
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
            timeout,
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
        let path_and_query = self.target(req.uri().path_and_query())?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| {
                HttpError::bad_request(
                    "bad-request-target",
                    format!("The request path cannot be forwarded: {e}"),
                )
            })?;

        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let original_host = req.headers().get(header::HOST).cloned();

        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        strip_identity(headers);
        strip_own_credentials(headers, id.session_cookie, fwd.bearer_used);

        // X-Forwarded-*: append the peer to any chain a load balancer set.
        let mut xff = String::with_capacity(64);
        if let Some(prev) = headers
            .get(names::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .filter(|p| !p.is_empty())
        {
            xff.push_str(prev);
            xff.push_str(", ");
        }
        let _ = write!(xff, "{}", fwd.client_addr.ip());
        if let Ok(v) = HeaderValue::from_maybe_shared(axum::body::Bytes::from(xff)) {
            headers.insert(names::X_FORWARDED_FOR, v);
        }
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

        let client = &self.clients[crate::connections::worker_index() % self.clients.len()];
        let response = match tokio::time::timeout(self.timeout, client.request(req)).await {
            Err(_) => {
                return Err(HttpError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    "The service behind tapgate did not answer in time. Try again shortly.",
                    format!("no response headers within {:?}", self.timeout),
                ));
            }
            Ok(Err(e)) => {
                return Err(HttpError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    "The service behind tapgate cannot be reached right now. Try again shortly.",
                    format!("{e:?}"),
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
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(name);
    }
    h.remove(names::KEEP_ALIVE);
    h.remove(names::PROXY_CONNECTION);
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
    let mut kept = String::new();
    for c in h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
    {
        let name = c.split('=').next().unwrap_or("").trim();
        if !c.is_empty()
            && name != cookie_name
            && !name.starts_with("tapgate_")
            && !name.starts_with("__Host-tapgate_")
        {
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(c);
        }
    }
    h.remove(header::COOKIE);
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
