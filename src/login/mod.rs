//! HTTP for the WebAuthn ceremonies: `options` → (browser) → `verify` →
//! session token → `Set-Cookie`. Ceremony state travels signed (cookie and
//! a `ceremony` field), so any instance can finish what another began; the
//! store makes each challenge single-use.
//!
//! - `register.rs`: a new user from an invite
//! - `enroll.rs`: another key for an existing user (signed in with a
//!   recent tap, or from a recovery invite); it also routes
//!   `/api/register/*` to the right one of the two
//! - `authenticate.rs`: sign-in, `/api/me`, logout
//! - `account.rs`: the signed-in user's own keys (rename, revoke, sign out
//!   everywhere, a link for another device)

pub mod account;
mod authenticate;
mod enroll;
mod register;

pub use authenticate::{login_options, login_verify, logout, me};
pub use enroll::{register_options_any, register_verify_any};
pub use register::{register_options, register_verify};

use crate::audit::{AuditEvent, Outcome};
use crate::error::HttpError;
use crate::server::{App, RequestCtx};
use crate::token::{CeremonyKind, CeremonyState, TokenError};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

pub const CEREMONY_COOKIE: &str = "tapgate_ceremony";

/// Adding a key (and revoking one, or making a link for another device)
/// needs a key tap at most this long ago; otherwise the person signs in
/// again first (step-up).
pub const FRESH_TAP: std::time::Duration = std::time::Duration::from_secs(300);

/// Issue the session cookie value for `principal`, carrying the user's
/// current revocation epoch (`ep`) and active key count (`nk`). Every
/// ceremony that signs someone in ends here, so that a user disabled a
/// moment ago gets no session even if a ceremony raced the change.
pub async fn start_session(
    app: &App,
    principal: &crate::model::Principal,
    now: u64,
) -> Result<String, HttpError> {
    let standing = app
        .store
        .standing(&principal.subject)
        .await?
        .ok_or_else(|| {
            HttpError::unauthenticated(
                "credential-unknown",
                "This account no longer exists. Ask your administrator.",
            )
        })?;
    if standing.disabled {
        return Err(user_disabled());
    }
    let (token, _) = app.keys.issue_session(
        principal,
        standing.epoch,
        standing.active_keys,
        now,
        app.config.session_ttl.as_secs(),
    );
    Ok(token)
}

pub(crate) fn user_disabled() -> HttpError {
    HttpError::forbidden(
        "user-disabled",
        "This account is disabled. Ask your administrator.",
    )
}

/// The request's session, or the 401 that says why there is none.
pub fn require_session(
    app: &App,
    headers: &HeaderMap,
    now: u64,
) -> Result<std::sync::Arc<crate::token::CachedSession>, HttpError> {
    let p = crate::gate::presented(app, headers, now);
    p.session.ok_or_else(|| match p.rejected {
        Some("session-revoked") => HttpError::unauthenticated(
            "session-revoked",
            "This session was ended (signed out everywhere, the key revoked, or the account changed by an administrator). Sign in again.",
        ),
        Some("session-expired") => {
            HttpError::unauthenticated("session-expired", "Your session has expired. Sign in again.")
        }
        _ => HttpError::unauthenticated("user-unauthenticated", "Sign in first."),
    })
}

/// Step-up for sensitive account changes: the last tap must be recent.
/// Answers like a route's `max_auth_age` (RFC 9470 challenge).
pub fn require_fresh_tap(
    session: &crate::token::CachedSession,
    now: u64,
    what: &str,
) -> Result<(), HttpError> {
    if now.saturating_sub(session.principal.auth_time) <= FRESH_TAP.as_secs() {
        return Ok(());
    }
    let challenge = format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"a fresh key tap is required\", max_age={}",
        FRESH_TAP.as_secs()
    );
    let mut e = HttpError::new(
        StatusCode::UNAUTHORIZED,
        "auth-too-old",
        format!(
            "{what} needs a key tap within the last {}. Sign in again with one of your keys, then try again.",
            humantime::format_duration(FRESH_TAP)
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        e = e.with_header(header::WWW_AUTHENTICATE, v);
    }
    Err(e)
}

/// The fingerprint of the trusted root a registration's attestation chain
/// ends at, if any (as `register.rs` decides it for a new user's key).
pub(crate) fn attestation_root(app: &App, reg: &tapgate_webauthn::Registration) -> Option<String> {
    match &reg.attestation {
        tapgate_webauthn::AttestationKind::Basic { x5c } => app
            .trust
            .load()
            .verify(x5c, std::time::SystemTime::now())
            .ok()
            .map(|path| path.root_fingerprint),
        _ => None,
    }
}

/// The stored record of a key that just registered; `attested` means its
/// attestation chain ends at a root trusted now.
pub(crate) fn new_credential(
    reg: &tapgate_webauthn::Registration,
    root: Option<String>,
    subject: &crate::model::Subject,
    nickname: Option<String>,
    now: u64,
) -> crate::store::CredentialRecord {
    crate::store::CredentialRecord {
        id: crate::model::CredentialId(reg.credential_id.clone()),
        subject: subject.clone(),
        public_key: reg.public_key.clone(),
        alg: reg.alg,
        sign_count: reg.sign_count,
        aaguid: crate::model::format_aaguid(&reg.aaguid),
        transports: reg.transports.clone(),
        backup_eligible: reg.flags.be,
        backup_state: reg.flags.bs,
        attestation_fmt: reg.fmt.clone(),
        attested: root.is_some(),
        nickname: clean_nickname(nickname).unwrap_or_else(|| "Passkey".into()),
        created: now,
        last_used: Some(now),
        revoked: None,
        attestation_root: root,
    }
}

/// A key's nickname as people typed it: trimmed, no control characters,
/// at most 64 characters; `None` when nothing is left.
pub(crate) fn clean_nickname(n: Option<String>) -> Option<String> {
    n.map(|n| {
        let kept: String = n.chars().filter(|c| !c.is_control()).collect();
        kept.trim().chars().take(64).collect::<String>()
    })
    .filter(|n| !n.is_empty())
}

/// A JSON body whose every rejection is one of our 400s (axum's default
/// is plain text).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                use axum::extract::rejection::JsonRejection as J;
                let (status, code, message) = match &rejection {
                    J::MissingJsonContentType(_) => (
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "json-content-type-required",
                        "Send the body as JSON with Content-Type: application/json.".to_owned(),
                    ),
                    J::JsonSyntaxError(_) => (
                        StatusCode::BAD_REQUEST,
                        "invalid-json",
                        "The body is not valid JSON.".to_owned(),
                    ),
                    J::JsonDataError(e) => (
                        StatusCode::BAD_REQUEST,
                        "invalid-request",
                        format!(
                            "The request body is not what this endpoint expects: {}.",
                            data_error_reason(&e.body_text())
                        ),
                    ),
                    J::BytesRejection(_) => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body-too-large",
                        "The request body is too large (64 KiB at most).".to_owned(),
                    ),
                    _ => (
                        StatusCode::BAD_REQUEST,
                        "invalid-request",
                        rejection.body_text(),
                    ),
                };
                Err(HttpError::new(status, code, message))
            }
        }
    }
}

/// serde's reason without axum's preamble and the line/column suffix:
/// "missing field `credential`".
fn data_error_reason(text: &str) -> String {
    let reason = text.rsplit_once("target type: ").map_or(text, |(_, r)| r);
    let reason = reason.rsplit_once(" at line ").map_or(reason, |(r, _)| r);
    short(reason, 160)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

/// `rd` must be a same-origin path; anything else becomes `/`.
pub fn safe_rd(rd: Option<&str>) -> String {
    let Some(rd) = rd else { return "/".into() };
    let ok = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.contains('\\')
        && !rd.chars().any(|c| c.is_control() || c.is_whitespace())
        && rd.len() <= 2048
        // Never bounce back into a ceremony or API endpoint.
        && !rd.starts_with("/.tapgate/api/")
        && !rd.starts_with("/.tapgate/logout");
    if ok { rd.to_owned() } else { "/".into() }
}

pub fn set_cookie(
    app: &App,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    same_site: &str,
) -> HeaderValue {
    let secure = if app.config.secure { "; Secure" } else { "" };
    let c = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    );
    // Tokens are base64url and dots; names and paths are ours: valid ASCII.
    HeaderValue::from_str(&c).expect("cookie is ASCII")
}

pub fn session_cookie(app: &App, token: &str) -> HeaderValue {
    set_cookie(
        app,
        app.cookie_name,
        token,
        "/",
        app.config.session_ttl.as_secs(),
        "Lax",
    )
}

pub fn clear_session_cookie(app: &App) -> HeaderValue {
    set_cookie(app, app.cookie_name, "", "/", 0, "Lax")
}

fn ceremony_cookie(app: &App, sealed: &str) -> HeaderValue {
    set_cookie(
        app,
        CEREMONY_COOKIE,
        sealed,
        "/.tapgate/api/",
        app.config.challenge_ttl.as_secs(),
        "Strict",
    )
}

fn clear_ceremony_cookie(app: &App) -> HeaderValue {
    set_cookie(app, CEREMONY_COOKIE, "", "/.tapgate/api/", 0, "Strict")
}

/// Open the ceremony state from the body field or the cookie, check its
/// kind, and burn its challenge (at most once, across all instances).
async fn take_ceremony(
    app: &App,
    headers: &HeaderMap,
    field: Option<&str>,
    kind: CeremonyKind,
    now: u64,
) -> Result<(CeremonyState, Vec<u8>), HttpError> {
    let sealed = field
        .filter(|s| !s.is_empty())
        .or_else(|| crate::gate::session_cookie(headers, CEREMONY_COOKIE))
        .ok_or_else(|| {
            HttpError::bad_request(
                "ceremony-missing",
                "No ceremony in progress: start again from the sign-in or invite page.",
            )
        })?;
    let state = app.keys.open_ceremony(sealed, now).map_err(|e| match e {
        TokenError::Expired => HttpError::bad_request(
            "ceremony-expired",
            format!(
                "That took longer than {} and the request expired. Start again.",
                humantime::format_duration(app.config.challenge_ttl)
            ),
        ),
        _ => HttpError::bad_request(
            "ceremony-invalid",
            "The ceremony state is not valid. Reload the page and start again.",
        ),
    })?;
    if state.kind != kind {
        return Err(HttpError::bad_request(
            "ceremony-wrong-kind",
            "This answer belongs to another kind of ceremony (registration vs sign-in). Reload the page and start again.",
        ));
    }
    let challenge = tapgate_webauthn::base64url_decode(&state.challenge).map_err(|_| {
        HttpError::bad_request(
            "ceremony-invalid",
            "The ceremony state is not valid. Start again.",
        )
    })?;
    if !app
        .store
        .consume_challenge(&challenge, state.exp, now)
        .await?
    {
        return Err(HttpError::bad_request(
            "challenge-reused",
            "This sign-in request was already used. Reload the page and start again.",
        ));
    }
    Ok((state, challenge))
}

/// An audit event pre-filled with the request's client facts.
fn event(
    name: &'static str,
    outcome: Outcome,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    client: std::net::SocketAddr,
) -> AuditEvent {
    let mut ev = AuditEvent::new(name, outcome);
    crate::gate::client_facts(&mut ev, ctx, headers, client);
    ev
}

/// The audit event of a request refused by a per-account limit that has no
/// ceremony event of its own (the `options` endpoints); its `ip` is the
/// client address the limits use.
fn rate_limited_event(
    app: &App,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    client: std::net::SocketAddr,
    route: &str,
) -> AuditEvent {
    let mut ev = event("rate_limited", Outcome::Failure, ctx, headers, client);
    ev.ip = Some(app.limits.client_ip(headers, client.ip()).to_string());
    ev.route = Some(route.to_owned());
    ev
}

/// Count an `options` request against the account it names before the
/// store is asked anything. A refusal is 429 `rate-limited`; the first
/// refusal of a run is audited as `rate_limited` (the event `describe`
/// fills in), later ones are not, so a flood is not a flood of audit lines.
fn limit_options(
    app: &App,
    account: crate::ratelimit::Account<'_>,
    describe: impl FnOnce() -> AuditEvent,
) -> Result<(), HttpError> {
    app.limits.check_account(account).map_err(|refused| {
        let err = refused.error();
        if refused.first {
            let mut ev = describe();
            ev.reason = Some(err.code.to_owned());
            ev.detail = Some(refused.detail().to_owned());
            app.audit.record(ev);
        }
        err
    })
}

/// Record a ceremony's outcome (success, or the failure's reason code) and
/// pass the result on.
fn audited<T>(app: &App, mut ev: AuditEvent, result: Result<T, HttpError>) -> Result<T, HttpError> {
    match &result {
        Ok(_) => ev.outcome = Some(Outcome::Success),
        Err(e) => {
            ev.outcome = Some(Outcome::Failure);
            ev.reason = Some(e.code.to_owned());
        }
    }
    app.audit.record(ev);
    result
}

/// Map a WebAuthn verification failure to a 400 with the crate's reason
/// and message.
fn webauthn_error(e: &tapgate_webauthn::Error) -> HttpError {
    HttpError::bad_request(e.reason(), e.to_string())
}

/// A JSON response with extra `Set-Cookie` headers.
fn json_with_cookies(body: serde_json::Value, cookies: &[HeaderValue]) -> Response {
    let mut r = axum::Json(body).into_response();
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::safe_rd;

    #[test]
    fn data_errors_read_like_sentences() {
        let axum = "Failed to deserialize the JSON body into the target type: missing field `credential` at line 1 column 2";
        assert_eq!(super::data_error_reason(axum), "missing field `credential`");
    }

    #[test]
    fn open_redirects_fall_back_to_root() {
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "\\\\evil",
            "javascript:alert(1)",
            "/\t/evil",
            "evil",
            "/.tapgate/api/login/verify",
            "",
        ] {
            assert_eq!(safe_rd(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_rd(None), "/");
        for good in ["/", "/app?x=1#y", "/.tapgate/account", "/a/b%20c"] {
            assert_eq!(safe_rd(Some(good)), good);
        }
    }
}
