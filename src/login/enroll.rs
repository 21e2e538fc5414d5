//! Another key for an existing user: `options` → create() → `verify` →
//! key stored → session re-issued.
//!
//! Two ways in, one ceremony (`CeremonyKind::AddKey`):
//! - signed in, with a key tap within [`super::FRESH_TAP`] (the account
//!   page's "Add a key"): the new key joins the session's user;
//! - a recovery invite (from an administrator, or the account page's "Add
//!   a key on another device"): the new key joins the invite's user, and
//!   the invite may revoke the user's other keys in the same transaction.
//!
//! Both arrive at `/api/register/options` and `/api/register/verify`
//! (PRODUCT.md: "body `{"invite"}` (or a live session for adding a key)");
//! [`register_options_any`] and [`register_verify_any`] send new-user
//! invites on to `register.rs` and keep the rest.

use super::{
    ApiJson, ceremony_cookie, clear_ceremony_cookie, event, json_with_cookies, new_credential,
    require_fresh_tap, require_session, session_cookie, start_session, take_ceremony,
    user_disabled, webauthn_error,
};
use crate::audit::{AuditEvent, Outcome};
use crate::error::HttpError;
use crate::model::{AuthnFacts, CredentialId, Principal};
use crate::ratelimit::Account;
use crate::server::{App, RequestCtx, now_unix};
use crate::store::{InviteRecord, StoreError, UserKeys};
use crate::token::{CeremonyKind, CeremonyState};
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// `POST /api/register/options`: a recovery invite or a signed-in user
/// adding a key is handled here; a new-user invite by `register.rs`.
pub async fn register_options_any(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let invite = body
        .get("invite")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 256);
    let route = "/.tapgate/api/register/options";
    match invite {
        Some(token) => {
            let hash = crate::crypto::sha256_hex(token.as_bytes());
            // New user or recovery: the invite is the account. Counted
            // before the store says whether it exists.
            super::limit_options(&app, Account::Invite(&hash), || {
                let mut ev = super::rate_limited_event(&app, &ctx, &headers, client, route);
                ev.target = Some(format!("invite {}", crate::admin::short_id(&hash)));
                ev
            })?;
            if let Some(invite) = app.store.invite(&hash, now).await?
                && invite.subject.is_some()
            {
                return recovery_options(&app, invite, now).await;
            }
        }
        None => {
            // A token was presented (good or not): this is about adding a
            // key, and a refused session gets its own 401 reason.
            let p = crate::gate::presented(&app, &headers, now);
            if let Some(session) = &p.session {
                let subject = &session.principal.subject;
                super::limit_options(&app, Account::Subject(subject.as_str()), || {
                    let mut ev = super::rate_limited_event(&app, &ctx, &headers, client, route);
                    ev.subject = Some(subject.to_string());
                    ev.email = Some(session.principal.email.to_string());
                    ev
                })?;
            }
            if p.session.is_some() || p.rejected.is_some() {
                return session_options(&app, &headers, now).await;
            }
        }
    }
    let body = serde_json::from_value(body).map_err(|e| {
        HttpError::bad_request(
            "invalid-request",
            format!("The request body is not what this endpoint expects: {e}."),
        )
    })?;
    super::register_options(State(app), ApiJson(body)).await
}

/// `POST /api/register/verify`: ceremonies begun by this module finish
/// here; new-user registrations in `register.rs`.
pub async fn register_verify_any(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    // Only a peek at the kind: `take_ceremony` checks it fully and burns
    // the challenge.
    let sealed = body
        .get("ceremony")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| crate::gate::session_cookie(&headers, super::CEREMONY_COOKIE));
    let peeked = sealed.and_then(|s| app.keys.open_ceremony(s, now).ok());
    let ours = peeked
        .as_ref()
        .is_some_and(|state| state.kind == CeremonyKind::AddKey);
    // The ceremony names the account (its invite, else its user); counted
    // before the challenge is burnt.
    if let Some(state) = &peeked {
        let account = match (&state.invite, &state.sub) {
            (Some(hash), _) => Some(Account::Invite(hash)),
            (None, Some(sub)) => Some(Account::Subject(sub.as_str())),
            (None, None) => None,
        };
        if let Some(Err(refused)) = account.map(|a| app.limits.check_account(a)) {
            let name = if ours { "key_added" } else { "registration" };
            let mut ev = event(name, Outcome::Failure, &ctx, &headers, client);
            ev.subject = state.sub.as_ref().map(ToString::to_string);
            ev.email = state.email.as_ref().map(ToString::to_string);
            ev.detail = Some(refused.detail().to_owned());
            return super::audited(&app, ev, Err(refused.error()));
        }
    }
    if ours {
        let body: AddKeyVerify = serde_json::from_value(body).map_err(|e| {
            HttpError::bad_request(
                "invalid-request",
                format!("The request body is not what this endpoint expects: {e}."),
            )
        })?;
        let mut ev = event("key_added", Outcome::Failure, &ctx, &headers, client);
        let result = add_key(&app, &headers, body, now, &mut ev).await;
        return super::audited(&app, ev, result);
    }
    let body = serde_json::from_value(body).map_err(|e| {
        HttpError::bad_request(
            "invalid-request",
            format!("The request body is not what this endpoint expects: {e}."),
        )
    })?;
    super::register_verify(
        State(app),
        ConnectInfo(client),
        Extension(ctx),
        headers,
        ApiJson(body),
    )
    .await
}

async fn session_options(app: &App, headers: &HeaderMap, now: u64) -> Result<Response, HttpError> {
    let session = require_session(app, headers, now)?;
    require_fresh_tap(&session, now, "Adding a key")?;
    let keys = app
        .store
        .user_with_keys(&session.principal.subject)
        .await?
        .ok_or_else(|| {
            HttpError::unauthenticated("user-unknown", "Your account no longer exists.")
        })?;
    if keys.user.disabled {
        return Err(user_disabled());
    }
    options(
        app,
        &keys,
        None,
        now,
        json!({ "email": keys.user.email, "roles": keys.user.roles }),
    )
}

async fn recovery_options(
    app: &App,
    invite: InviteRecord,
    now: u64,
) -> Result<Response, HttpError> {
    let subject = invite.subject.clone().ok_or_else(invite_unavailable)?;
    let keys = app
        .store
        .user_with_keys(&subject)
        .await?
        .ok_or_else(invite_unavailable)?;
    if keys.user.disabled {
        return Err(user_disabled());
    }
    let about = json!({
        "email": keys.user.email,
        "roles": keys.user.roles,
        "recovery": true,
        "revoke_other_keys": invite.revoke_other_keys,
    });
    options(app, &keys, Some(invite.token_hash), now, about)
}

fn options(
    app: &App,
    keys: &UserKeys,
    invite: Option<String>,
    now: u64,
    about: Value,
) -> Result<Response, HttpError> {
    let user = &keys.user;
    let challenge = crate::crypto::random_bytes(32);
    let ttl = app.config.challenge_ttl.as_secs();
    let mut state = CeremonyState::new(&app.keys, CeremonyKind::AddKey, &challenge, now, ttl);
    state.sub = Some(user.subject.clone());
    state.email = Some(user.email.clone());
    state.roles = user.roles.clone();
    state.invite = invite;
    let sealed = app.keys.seal_ceremony(&state);
    // The user's active keys are excluded: the browser then refuses to
    // register an authenticator twice (a revoked one may come back).
    let exclude: Vec<Value> = keys
        .credentials
        .iter()
        .filter(|c| c.is_active())
        .map(|c| json!({ "type": "public-key", "id": c.id.to_base64url(), "transports": c.transports }))
        .collect();
    let options = json!({
        "rp": { "id": app.config.rp_id, "name": app.config.rp_name },
        "user": {
            "id": tapgate_webauthn::base64url(user.subject.as_str().as_bytes()),
            "name": user.email,
            "displayName": user.display_name,
        },
        "challenge": tapgate_webauthn::base64url(&challenge),
        "pubKeyCredParams": [
            { "type": "public-key", "alg": -7 },
            { "type": "public-key", "alg": -8 },
            { "type": "public-key", "alg": -257 },
        ],
        "timeout": ttl * 1000,
        "excludeCredentials": exclude,
        "authenticatorSelection": { "residentKey": "required", "requireResidentKey": true, "userVerification": super::register::uv_str(app) },
        // As for a new user's key: the maker's certificate only when a rule
        // needs it (browsers may ask the person about it).
        "attestation": if app.policy.load().wants_attestation() { "direct" } else { "none" },
        "extensions": { "credProps": true },
    });
    Ok(json_with_cookies(
        json!({ "publicKey": options, "ceremony": sealed, "invite": about }),
        &[ceremony_cookie(app, &sealed)],
    ))
}

#[derive(Deserialize)]
struct AddKeyVerify {
    credential: tapgate_webauthn::RegistrationResponseJson,
    nickname: Option<String>,
    ceremony: Option<String>,
}

fn invite_unavailable() -> HttpError {
    HttpError::bad_request(
        "invite-invalid",
        "This invite link is unknown, already used or expired. Ask your administrator for a new one.",
    )
}

async fn add_key(
    app: &App,
    headers: &HeaderMap,
    body: AddKeyVerify,
    now: u64,
    ev: &mut AuditEvent,
) -> Result<Response, HttpError> {
    let (state, challenge) = take_ceremony(
        app,
        headers,
        body.ceremony.as_deref(),
        CeremonyKind::AddKey,
        now,
    )
    .await?;
    let (Some(subject), Some(email)) = (state.sub, state.email) else {
        return Err(HttpError::bad_request(
            "ceremony-invalid",
            "The ceremony state is incomplete. Start again.",
        ));
    };
    ev.subject = Some(subject.to_string());
    ev.email = Some(email.to_string());
    ev.actor = Some(subject.to_string());
    // Signed in: the same user must still be, with a recent tap.
    let current = match &state.invite {
        Some(_) => None,
        None => {
            let session = require_session(app, headers, now)?;
            if session.principal.subject != subject {
                return Err(HttpError::bad_request(
                    "ceremony-invalid",
                    "This key was being added for another account. Reload the page and start again.",
                ));
            }
            require_fresh_tap(&session, now, "Adding a key")?;
            Some(session)
        }
    };
    ev.detail = Some(
        if state.invite.is_some() {
            "recovery-invite"
        } else {
            "account"
        }
        .into(),
    );
    let reg = tapgate_webauthn::verify_registration(
        &app.rp,
        &challenge,
        &body.credential,
        std::time::SystemTime::now(),
    )
    .map_err(|e| webauthn_error(&e))?;
    let root = super::attestation_root(app, &reg);
    let record = new_credential(&reg, root, &subject, body.nickname, now);
    let facts = AuthnFacts {
        root: record.attestation_root.clone(),
        uv: reg.flags.uv,
        synced: reg.flags.be,
        attested: record.attested,
        aaguid: record.aaguid.clone(),
    };
    // A deployment that accepts hardware keys only accepts them as backup
    // keys only, too.
    super::register::refuse_below_floor(app, &facts)?;
    ev.credential = Some(record.id.digest());
    ev.target = Some(format!("key {}", record.id.digest()));
    let duplicate = || {
        HttpError::new(
            StatusCode::CONFLICT,
            "credential-already-registered",
            "This key is already registered. Use another key, or sign in with this one.",
        )
    };
    let mut revoked = Vec::new();
    match &state.invite {
        None => app
            .store
            .add_credential(&record)
            .await
            .map_err(|e| match e {
                StoreError::DuplicateCredential => duplicate(),
                other => other.into(),
            })?,
        Some(hash) => {
            let done = app
                .store
                .add_key_with_invite(hash, &record, now)
                .await
                .map_err(|e| match e {
                    StoreError::InviteUnavailable => invite_unavailable(),
                    StoreError::DuplicateCredential => duplicate(),
                    other => other.into(),
                })?;
            revoked = done.revoked;
        }
    }
    for id in &revoked {
        let mut r = ev.clone();
        r.event = "key_revoked";
        r.outcome = Some(Outcome::Success);
        r.credential = Some(id.digest());
        r.target = Some(format!("key {}", id.digest()));
        r.detail = Some("replaced by a recovery key".into());
        app.audit.record(r);
    }
    // Signed in: the same session, re-issued to count the new key. From a
    // recovery invite: a new session with the new key.
    let principal = match &current {
        Some(session) => session.principal.clone(),
        None => Principal {
            subject: subject.clone(),
            email: email.clone(),
            roles: state.roles.clone(),
            auth_time: now,
            cred: record.id.digest(),
            authn: facts,
            keys: 0,
        },
    };
    let token = start_session(app, &principal, now).await?;
    let redirect = if current.is_some() {
        "/.tapgate/account"
    } else {
        "/"
    };
    Ok(json_with_cookies(
        json!({
            "redirect": redirect,
            "subject": subject,
            "email": email,
            "key": super::account::key_json(&record, None),
            "revoked": revoked.iter().map(CredentialId::digest).collect::<Vec<_>>(),
        }),
        &[session_cookie(app, &token), clear_ceremony_cookie(app)],
    ))
}
