//! Sign-in: options (discoverable by default) → navigator.credentials.get()
//! → verify against the stored key → counter updated → signed in.

use super::{
    ApiJson, audited, ceremony_cookie, clear_ceremony_cookie, clear_session_cookie, event,
    json_with_cookies, safe_rd, session_cookie, take_ceremony, webauthn_error,
};
use crate::audit::Outcome;
use crate::error::HttpError;
use crate::model::{AuthnFacts, CredentialId, Email, Principal, Subject};
use crate::ratelimit::Account;
use crate::server::{App, RequestCtx, now_unix};
use crate::token::{CeremonyKind, CeremonyState};
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct LoginOptionsRequest {
    email: Option<String>,
    rd: Option<String>,
}

pub async fn login_options(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginOptionsRequest>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let mut allow = Vec::new();
    if let Some(email) = body.email.as_deref().filter(|e| !e.trim().is_empty()) {
        let email = Email::parse(email).map_err(|m| HttpError::bad_request("email-invalid", m))?;
        // Counted whether or not the email is registered: a refusal must
        // not tell the two apart either.
        // Someone else can spend an email's budget, so the refusal points
        // to the way in that names no email.
        super::limit_options(&app, Account::Email(&email.0), || {
            let mut ev = super::rate_limited_event(
                &app,
                &ctx,
                &headers,
                client,
                "/.tapgate/api/login/options",
            );
            ev.email = Some(email.to_string());
            ev
        })
        .map_err(|mut e| {
            e.message
                .push_str(" You can also sign in without entering your email: your passkey knows who you are.");
            e
        })?;
        // An unknown email gets the same answer shape as a known one (no
        // allowCredentials): the response must not reveal who is registered.
        if let Some(user) = app.store.user_by_email(&email).await? {
            for c in app.store.credentials_of(&user.subject).await? {
                if c.revoked.is_none() {
                    allow.push(json!({ "type": "public-key", "id": c.id.to_base64url(), "transports": c.transports }));
                }
            }
        }
    }
    let challenge = crate::crypto::random_bytes(32);
    let ttl = app.config.challenge_ttl.as_secs();
    let mut state = CeremonyState::new(&app.keys, CeremonyKind::Login, &challenge, now, ttl);
    state.rd = Some(safe_rd(body.rd.as_deref()));
    let sealed = app.keys.seal_ceremony(&state);
    let options = json!({
        "challenge": tapgate_webauthn::base64url(&challenge),
        "timeout": ttl * 1000,
        "rpId": app.config.rp_id,
        "allowCredentials": allow,
        "userVerification": super::register::uv_str(&app),
    });
    Ok(json_with_cookies(
        json!({ "publicKey": options, "ceremony": sealed }),
        &[ceremony_cookie(&app, &sealed)],
    ))
}

#[derive(Deserialize)]
pub struct LoginVerifyRequest {
    credential: tapgate_webauthn::AuthenticationResponseJson,
    ceremony: Option<String>,
}

pub async fn login_verify(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginVerifyRequest>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let mut ev = event("login", Outcome::Failure, &ctx, &headers, client);
    let result = login(&app, &headers, body, now, &mut ev).await;
    audited(&app, ev, result)
}

fn not_recognised(code: &'static str, message: &str) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, code, message)
}

async fn login(
    app: &App,
    headers: &HeaderMap,
    body: LoginVerifyRequest,
    now: u64,
    ev: &mut crate::audit::AuditEvent,
) -> Result<Response, HttpError> {
    // Not counted per account: a signature cannot be guessed, and the key's
    // id is no secret (sign-in by email lists it), so a per-key budget
    // would let anyone lock the key's owner out. The per-address limit
    // bounds what one client can make this cost.
    let (state, challenge) = take_ceremony(
        app,
        headers,
        body.ceremony.as_deref(),
        CeremonyKind::Login,
        now,
    )
    .await?;
    let cred = &body.credential;
    let id = CredentialId(cred.credential_id().map_err(|e| webauthn_error(&e))?);
    ev.credential = Some(id.digest());
    let record = app.store.credential(&id).await?.ok_or_else(|| {
        not_recognised(
            "credential-unknown",
            "This passkey is not registered here. Use another key, or ask your administrator for an invite.",
        )
    })?;
    ev.subject = Some(record.subject.to_string());
    if record.revoked.is_some() {
        return Err(not_recognised(
            "credential-revoked",
            "This key was revoked. Sign in with another of your keys.",
        ));
    }
    // A discoverable credential names its user: it must be the owner.
    if let Some(handle) = cred.user_handle().map_err(|e| webauthn_error(&e))?
        && handle != record.subject.as_str().as_bytes()
    {
        return Err(HttpError::bad_request(
            "user-handle-mismatch",
            "The key answered for a different account than the one it is registered to.",
        ));
    }
    let user = app.store.user(&record.subject).await?.ok_or_else(|| {
        not_recognised(
            "credential-unknown",
            "This passkey's account no longer exists. Ask your administrator.",
        )
    })?;
    ev.email = Some(user.email.to_string());
    if user.disabled {
        return Err(HttpError::forbidden(
            "user-disabled",
            "This account is disabled. Ask your administrator.",
        ));
    }
    let stored = tapgate_webauthn::StoredCredential {
        id: &record.id.0,
        public_key: &record.public_key,
        sign_count: record.sign_count,
        backup_eligible: record.backup_eligible,
    };
    let auth = tapgate_webauthn::verify_authentication(
        &app.rp,
        &challenge,
        cred,
        &stored,
        std::time::SystemTime::now(),
    )
    .map_err(|e| webauthn_error(&e))?;
    app.store
        .record_use(&record.id, auth.sign_count, auth.flags.bs, now)
        .await?;
    let principal = Principal {
        subject: Subject(user.subject.0.clone()),
        email: user.email.clone(),
        roles: user.roles.clone(),
        auth_time: now,
        cred: id.digest(),
        // The root is the one recorded at registration; whether it is still
        // trusted is the policy's question, asked on every request.
        authn: AuthnFacts {
            root: record.attestation_root.clone(),
            uv: auth.flags.uv,
            synced: record.backup_eligible,
            attested: record.attestation_root.is_some(),
            aaguid: record.aaguid.clone(),
        },
        keys: 0,
    };
    let token = super::start_session(app, &principal, now).await?;
    let rd = safe_rd(state.rd.as_deref());
    Ok(json_with_cookies(
        json!({ "redirect": rd, "subject": principal.subject, "email": principal.email, "token": token_for_cli(headers, &token) }),
        &[session_cookie(app, &token), clear_ceremony_cookie(app)],
    ))
}

/// Non-browser clients (the CLI) ask for the session token in the body with
/// `Accept: application/json` and no Origin; browsers only get the cookie.
fn token_for_cli(headers: &HeaderMap, token: &str) -> Option<String> {
    if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        None
    } else {
        Some(token.to_owned())
    }
}

/// The signed-in user's own record (the account page).
pub async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, HttpError> {
    let now = now_unix();
    let p = crate::gate::presented(&app, &headers, now);
    let session = p
        .session
        .ok_or_else(|| HttpError::unauthenticated("user-unauthenticated", "Sign in first."))?;
    let subject = &session.principal.subject;
    let user = app.store.user(subject).await?.ok_or_else(|| {
        HttpError::unauthenticated("user-unknown", "Your account no longer exists.")
    })?;
    let creds: Vec<_> = app
        .store
        .credentials_of(subject)
        .await?
        .into_iter()
        .filter(|c| c.revoked.is_none())
        .map(|c| {
            json!({
                "id": c.id.to_base64url(), "nickname": c.nickname, "created": c.created,
                "last_used": c.last_used, "synced": c.backup_eligible, "aaguid": c.aaguid,
                "current": c.id.digest() == session.principal.cred,
            })
        })
        .collect();
    let mut r = axum::Json(json!({
        "subject": user.subject, "email": user.email, "display_name": user.display_name,
        "roles": user.roles, "auth_time": session.principal.auth_time, "credentials": creds,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// End the session on this browser (the cookie is cleared; stateless tokens
/// expire on their own — server-side revocation comes with key management).
pub async fn logout(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Response {
    let p = crate::gate::presented(&app, &headers, now_unix());
    let mut ev = event("logout", Outcome::Success, &ctx, &headers, client);
    if let Some(s) = &p.session {
        ev.subject = Some(s.principal.subject.to_string());
        ev.email = Some(s.principal.email.to_string());
    }
    app.audit.record(ev);
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
        || headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
    let mut r = if wants_json {
        axum::Json(json!({ "redirect": "/.tapgate/login" })).into_response()
    } else {
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/.tapgate/login")],
        )
            .into_response()
    };
    r.headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie(&app));
    r
}
