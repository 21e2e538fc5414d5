//! The request path for everything that is not `/.tapgate/*`:
//! cookie/bearer → session (cached verify, then the in-memory revocation
//! set) → policy → upstream, or a redirect to sign in, a step-up
//! challenge, or a denial. Never touches the store.

use crate::audit::{AuditEvent, Outcome};
use crate::error::HttpError;
use crate::policy::Decision;
use crate::server::{App, RequestCtx, now_unix};
use crate::token::CachedSession;
use crate::upstream::{Forward, names};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The session presented by a request, if any.
pub struct Presented {
    pub session: Option<Arc<CachedSession>>,
    pub bearer: bool,
    /// Why a presented token was not accepted (for the reason code).
    pub rejected: Option<&'static str>,
    /// A good token whose session was revoked (for the audit event).
    pub revoked: Option<Arc<CachedSession>>,
}

/// Find and verify the session token: the cookie first, then a bearer.
pub fn presented(app: &App, headers: &HeaderMap, now: u64) -> Presented {
    let (token, bearer) = match session_cookie(headers, app.cookie_name) {
        Some(t) => (Some(t), false),
        None => (bearer_token(headers), true),
    };
    let Some(token) = token else {
        return Presented {
            session: None,
            bearer: false,
            rejected: None,
            revoked: None,
        };
    };
    match app.sessions.verify(&app.keys, token, now) {
        // Revoked on any instance within a second: a hash lookup in the
        // set the feed keeps current (crate::revocation).
        Ok(s) if app.revocations.load().check(&s.claims).is_some() => Presented {
            session: None,
            bearer,
            rejected: Some("session-revoked"),
            revoked: Some(s),
        },
        Ok(s) => Presented {
            session: Some(s),
            bearer,
            rejected: None,
            revoked: None,
        },
        Err(crate::token::TokenError::Expired) => Presented {
            session: None,
            bearer,
            rejected: Some("session-expired"),
            revoked: None,
        },
        Err(_) => Presented {
            session: None,
            bearer,
            rejected: Some("session-invalid"),
            revoked: None,
        },
    }
}

/// The value of cookie `name` (the first one of that name), if present and
/// not empty.
pub fn session_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| cookies(v.as_bytes()))
        .find_map(|c| split_cookie(c).filter(|(k, _)| *k == name.as_bytes()))?
        .1
        .trim_ascii();
    // Only the chosen value is checked as text, not the whole header.
    std::str::from_utf8(value).ok().filter(|v| !v.is_empty())
}

/// The cookies in one `Cookie` header value: what lies between the ';'
/// separators (RFC 6265 §5.4), trimmed of whitespace. Bytes rather than
/// text: a session token is most of the value, and finding the ';' after
/// it is one vectorised scan (memchr) rather than a check of every byte.
pub fn cookies(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let r = rest?;
        let (cookie, next) = match memchr::memchr(b';', r) {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = next;
        Some(cookie.trim_ascii())
    })
}

/// A cookie's name and value; `None` if it has no '='.
pub fn split_cookie(cookie: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = cookie.iter().position(|&b| b == b'=')?;
    Some((&cookie[..i], &cookie[i + 1..]))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Paths with dot segments or encoded separators are refused: the policy
/// matches on the path as written, and the upstream must see the same one.
pub fn normalised_path(path: &str) -> Result<&str, HttpError> {
    const ENCODED: [&[u8]; 4] = [b"2e", b"2f", b"5c", b"00"];
    let b = path.as_bytes();
    // A backslash, or '%' starting an encoded dot, separator or NUL: the
    // bytes to look at are found by one vectorised scan (memchr).
    let escaped = memchr::memchr2_iter(b'%', b'\\', b).any(|i| {
        b[i] == b'\\'
            || b.get(i + 1..i + 3)
                .is_some_and(|h| ENCODED.iter().any(|e| h.eq_ignore_ascii_case(e)))
    });
    // After the leading '/': no "." or ".." segment, and no empty one
    // except the last ("//" inside the path; "/a/" is fine).
    let mut segments = b.split(|&c| c == b'/').skip(1).peekable();
    let mut dotted = false;
    while let Some(seg) = segments.next() {
        if seg == b"." || seg == b".." || (seg.is_empty() && segments.peek().is_some()) {
            dotted = true;
            break;
        }
    }
    if b.first() != Some(&b'/') || escaped || dotted {
        return Err(HttpError::bad_request(
            "path-not-normalised",
            "The request path contains '.', '..', '//', a backslash or an encoded separator. Use the plain path.",
        ));
    }
    Ok(path)
}

pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| memchr::memmem::find(a.as_bytes(), b"text/html").is_some())
}

pub fn login_redirect(rd: &str, reason: Option<&str>) -> Response {
    let mut target = String::from("/.tapgate/login?rd=");
    target.extend(url::form_urlencoded::byte_serialize(rd.as_bytes()));
    if let Some(reason) = reason {
        target.push_str("&reason=");
        target.push_str(reason);
    }
    let mut r = StatusCode::FOUND.into_response();
    // A path we built from a validated path: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What the policy said, as an HTTP outcome (shared by the proxy and the
/// forward-auth endpoint).
pub enum Verdict {
    Allow(crate::policy::Permitted),
    Respond(Response),
}

/// The request a decision is about (the original one, for forward-auth).
pub struct Asked<'a> {
    /// A browser navigation gets redirects and pages; anything else 401/403.
    pub navigation: bool,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub target: &'a str,
    pub client: SocketAddr,
}

/// The host name a request was sent to, without port.
pub fn request_host(headers: &HeaderMap, forwarded: bool) -> &str {
    let from = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = if forwarded {
        from(&names::X_FORWARDED_HOST).or_else(|| from(&header::HOST))
    } else {
        from(&header::HOST)
    };
    let host = host.unwrap_or("");
    // "[::1]:8080" → "[::1]", "example.com:8080" → "example.com".
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// The message a person sees for a step-up or strength reason.
pub fn reason_message(
    reason: &str,
    policy: &crate::policy::Policy,
    max_age: Option<std::time::Duration>,
) -> String {
    match reason {
        "auth-too-old" => format!(
            "This page needs a key tap within the last {}. Sign in again with your key to continue.",
            humantime::format_duration(max_age.unwrap_or_default())
        ),
        "credential-not-hardware" => {
            let names = accepted_authenticators(policy);
            format!("This page accepts only approved hardware security keys ({names}). Sign in with one of them.")
        }
        "credential-synced" => "This page does not accept synced passkeys. Sign in with a device-bound security key.".into(),
        "user-verification-missing" => "This page needs a key that checks your PIN or fingerprint. Sign in with such a key.".into(),
        "route-role-missing" => "Your account does not have a role that this page allows. Ask an administrator for access.".into(),
        "backup-key-required" => "This page needs a backup key: register a second passkey or security key on your account page, then try again.".into(),
        "route-user-not-allowed" => "Your account is not on the list of people this page allows. Ask an administrator for access.".into(),
        _ => "No rule allows this address. Ask an administrator if you need it.".into(),
    }
}

/// Human names of the hardware keys a policy accepts, for messages.
pub fn accepted_authenticators(policy: &crate::policy::Policy) -> String {
    let trust = policy.trust();
    if trust.aaguids.is_empty() {
        return "any key whose maker's attestation certificate is trusted here".into();
    }
    let names: Vec<String> = trust
        .aaguids
        .iter()
        .map(|a| {
            crate::model::parse_aaguid(a)
                .and_then(|b| tapgate_webauthn::authenticator_name(&b))
                .map_or_else(|| a.clone(), str::to_owned)
        })
        .collect();
    names.join(", ")
}

pub fn apply_decision(
    app: &App,
    ctx: &RequestCtx,
    decision: Decision,
    p: &Presented,
    asked: &Asked,
) -> Verdict {
    let policy = app.policy.load();
    let rule_text = |rule: Option<usize>| match rule {
        Some(i) => format!(
            "route[{i}] ({})",
            policy
                .rules()
                .get(i)
                .map(|r| r.describe())
                .unwrap_or_default()
        ),
        None => "(default)".into(),
    };
    match decision {
        Decision::Allow(permitted) => Verdict::Allow(permitted),
        Decision::Login { reason, .. } => {
            let reason = p.rejected.unwrap_or(reason);
            if let Some(s) = &p.revoked {
                let mut ev = AuditEvent::new("session_refused", Outcome::Deny);
                client_facts(&mut ev, ctx, asked.headers, asked.client);
                ev.subject = Some(s.principal.subject.to_string());
                ev.email = Some(s.principal.email.to_string());
                ev.credential = Some(s.principal.cred.clone());
                ev.reason = Some(reason.to_owned());
                app.audit.record(ev);
            }
            if asked.navigation {
                Verdict::Respond(login_redirect(asked.target, None))
            } else {
                let message = match reason {
                    "session-expired" => "Your session has expired. Sign in again and retry.",
                    "session-invalid" => {
                        "The session token is not valid here. Sign in again and retry."
                    }
                    "session-revoked" => {
                        "This session was ended (signed out everywhere, the key revoked, or the account changed by an administrator). Sign in again and retry."
                    }
                    _ => {
                        "Sign in first: open this address in a browser and sign in with your passkey."
                    }
                };
                Verdict::Respond(HttpError::unauthenticated(reason, message).into_response())
            }
        }
        Decision::StepUp {
            reason,
            max_age,
            acr,
            rule,
        } => {
            let mut ev = AuditEvent::new("step_up_required", Outcome::Deny);
            fill_event(&mut ev, ctx, p, asked.headers, asked.client);
            ev.route = Some(rule_text(Some(rule)));
            ev.reason = Some(reason.into());
            app.audit.record(ev);
            if asked.navigation {
                return Verdict::Respond(login_redirect(asked.target, Some(reason)));
            }
            // RFC 9470: tell the client what a new authentication must meet.
            let mut challenge = String::from(
                "Bearer error=\"insufficient_user_authentication\", error_description=\"a fresh key tap is required\"",
            );
            if let Some(m) = max_age {
                challenge.push_str(&format!(", max_age={}", m.as_secs()));
            }
            if let Some(acr) = acr {
                challenge.push_str(&format!(", acr_values=\"{acr}\""));
            }
            let mut e = HttpError::new(
                StatusCode::UNAUTHORIZED,
                reason,
                reason_message(reason, &policy, max_age),
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                e = e.with_header(header::WWW_AUTHENTICATE, v);
            }
            Verdict::Respond(e.into_response())
        }
        Decision::Deny { reason, rule } => {
            let mut ev = AuditEvent::new("policy_denied", Outcome::Deny);
            fill_event(&mut ev, ctx, p, asked.headers, asked.client);
            ev.route = Some(rule_text(rule));
            ev.reason = Some(reason.to_owned());
            app.audit.record(ev);
            Verdict::Respond(
                HttpError::forbidden(reason, reason_message(reason, &policy, None)).into_response(),
            )
        }
    }
}

pub fn fill_event(
    ev: &mut AuditEvent,
    ctx: &RequestCtx,
    p: &Presented,
    headers: &HeaderMap,
    client: SocketAddr,
) {
    if let Some(s) = &p.session {
        ev.subject = Some(s.principal.subject.to_string());
        ev.email = Some(s.principal.email.to_string());
        ev.credential = Some(s.principal.cred.clone());
    }
    client_facts(ev, ctx, headers, client);
}

/// The request facts every audit event carries: client address, user
/// agent (truncated), request id.
pub fn client_facts(
    ev: &mut AuditEvent,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    client: SocketAddr,
) {
    ev.ip =
        Some(crate::ratelimit::client_addr(headers, client.ip(), ctx.trusted_proxies).to_string());
    ev.user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    ev.request_id = Some(ctx.id.clone());
}

/// The reverse-proxy handler (the router's fallback).
pub async fn proxy(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    mut req: Request<Body>,
) -> Response {
    // Taken, not cloned: nothing after the gate reads it from the request.
    let ctx = req
        .extensions_mut()
        .remove::<RequestCtx>()
        .unwrap_or_default();
    proxy_request(&app, client, ctx, req).await
}

/// The gate and the upstream for one request: what [`proxy`] does, called
/// directly by the serving front (`server::Front`) for every path that is
/// not tapgate's own.
pub async fn proxy_request(
    app: &Arc<App>,
    client: SocketAddr,
    ctx: RequestCtx,
    req: Request<Body>,
) -> Response {
    let path = match normalised_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let now = now_unix();
    let p = presented(app, req.headers(), now);
    let request = crate::policy::Request {
        host: request_host(req.headers(), false),
        method: req.method(),
        path,
    };
    let decision =
        app.policy
            .load()
            .decide(p.session.as_ref().map(|s| &s.principal), &request, now);
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let asked = Asked {
        navigation: ctx.navigation,
        method: req.method(),
        headers: req.headers(),
        target,
        client,
    };
    let permitted = match apply_decision(app, &ctx, decision, &p, &asked) {
        Verdict::Allow(permitted) => permitted,
        Verdict::Respond(r) => return r,
    };
    let Some(upstream) = &app.upstream else {
        return HttpError::internal("no upstream configured").into_response();
    };
    let assertion = p.session.as_ref().map(|s| {
        s.assertion(
            &app.keys,
            &app.config.assertion_audience,
            now,
            app.config.assertion_ttl.as_secs(),
        )
    });
    let fwd = Forward {
        permitted,
        session: p.session.as_deref(),
        assertion,
        client_addr: client,
        request_id: &ctx.id,
        bearer_used: p.bearer,
    };
    match upstream.forward(req, fwd, &app.identity).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `/.tapgate/auth`: the forward-auth decision for nginx `auth_request`,
/// Envoy ext_authz (HTTP) and Traefik ForwardAuth.
pub async fn forward_auth(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let ctx = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .unwrap_or_default();
    let h = req.headers();
    let header_str = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let method = header_str("x-original-method")
        .or_else(|| header_str("x-forwarded-method"))
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let target = header_str("x-original-uri")
        .or_else(|| header_str("x-forwarded-uri"))
        .unwrap_or("/")
        .to_owned();
    let path = target.split('?').next().unwrap_or("/");
    let path = match normalised_path(path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let now = now_unix();
    let p = presented(&app, h, now);
    let request = crate::policy::Request {
        host: request_host(h, true),
        method: &method,
        path,
    };
    let decision =
        app.policy
            .load()
            .decide(p.session.as_ref().map(|s| &s.principal), &request, now);
    // The subrequest itself is not a navigation: always answer 401/403
    // and let the front proxy turn 401 into a redirect to the login page.
    let asked = Asked {
        navigation: false,
        method: &method,
        headers: h,
        target: &target,
        client,
    };
    match apply_decision(&app, &ctx, decision, &p, &asked) {
        Verdict::Respond(r) => r,
        Verdict::Allow(_permitted) => {
            let mut r = StatusCode::OK.into_response();
            // The identity values built once per session (as the proxy
            // sends them): none at all rather than a wrong one.
            if let Some(s) = &p.session
                && let Some(crate::token::IdentityHeaders { user, email, roles }) = &s.identity
            {
                let hs = r.headers_mut();
                hs.insert(names::X_TAPGATE_USER, user.clone());
                hs.insert(names::X_TAPGATE_EMAIL, email.clone());
                hs.insert(names::X_TAPGATE_ROLES, roles.clone());
                hs.insert(
                    names::X_TAPGATE_ASSERTION,
                    s.assertion(
                        &app.keys,
                        &app.config.assertion_audience,
                        now,
                        app.config.assertion_ttl.as_secs(),
                    ),
                );
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalisation_refuses_tricks() {
        for ok in [
            "/",
            "/a/b",
            "/a/",
            "/a.b/c..d",
            "/%41",
            "/%2",
            "/a%2",
            "/%20x",
            "/.well-known/x",
            "/a/...",
        ] {
            assert!(normalised_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/admin/../x",
            "/./admin",
            "//admin",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a\\b",
            "/a/..",
            "/x%00",
            "/x%5C",
            "/%2E",
            "/a/.",
            "/a//",
            "/a//b",
            "",
            "a/b",
            "%2f",
        ] {
            assert!(normalised_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cookie_and_bearer_extraction() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tapgate_session=tok; b=2"),
        );
        assert_eq!(session_cookie(&h, "tapgate_session"), Some("tok"));
        assert_eq!(session_cookie(&h, "__Host-tapgate_session"), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn cookie_scan_edge_cases() {
        let all = |v: &'static str| -> Vec<&'static str> {
            cookies(v.as_bytes())
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect()
        };
        assert_eq!(all("a=1; b=2"), ["a=1", "b=2"]);
        assert_eq!(all(" a=1 ;b=2;; "), ["a=1", "b=2", "", ""]);
        assert_eq!(all("flag"), ["flag"]);
        assert_eq!(split_cookie(b"flag"), None);
        assert_eq!(split_cookie(b"k=v=w"), Some((&b"k"[..], &b"v=w"[..])));

        let mut h = HeaderMap::new();
        fn cookie(h: &HeaderMap) -> Option<&str> {
            session_cookie(h, "tapgate_session")
        }
        h.insert(header::COOKIE, HeaderValue::from_static("tapgate_session="));
        assert_eq!(cookie(&h), None, "an empty value is no token");
        // The first of that name counts, across several Cookie headers.
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1;tapgate_session"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static(" tapgate_session = t1 ; tapgate_session=t2"),
        );
        // "tapgate_session" without '=' and "tapgate_session " are not it.
        assert_eq!(cookie(&h), Some("t2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tapgate_session=t3"),
        );
        assert_eq!(cookie(&h), Some("t2"));
        // Bytes that are not text in another cookie do not hide ours.
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"n=\xff\xfe; tapgate_session=tok").unwrap(),
        );
        assert_eq!(cookie(&h), Some("tok"));
    }

    #[test]
    fn navigation_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_navigation(&Method::GET, &h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::POST, &h));
    }
}
