//! The signed-in user's own keys (`/.tapgate/account` and
//! `/.tapgate/api/account/…`): list, rename, revoke, sign out everywhere,
//! and a link (with QR code) that adds a key from another device. Adding a
//! key here is a ceremony: see `enroll.rs`.
//!
//! Every change is an audit event with the user as actor; revoking and the
//! device link need a recent tap ([`super::FRESH_TAP`]).

use super::{
    ApiJson, clear_session_cookie, event, json_with_cookies, require_fresh_tap, require_session,
    session_cookie, start_session,
};
use crate::audit::Outcome;
use crate::error::HttpError;
use crate::model::CredentialId;
use crate::server::{App, RequestCtx, now_unix};
use crate::store::{CredentialRecord, StoreError};
use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a link for another device stays valid.
pub const DEVICE_LINK_TTL: Duration = Duration::from_secs(15 * 60);

/// One key as the account and admin pages show it. `current` says whether
/// it made the session asking (`None`: not known, e.g. for an admin).
pub fn key_json(c: &CredentialRecord, current: Option<&str>) -> Value {
    let name = crate::model::parse_aaguid(&c.aaguid)
        .filter(|a| a != &[0u8; 16])
        .and_then(|a| tapgate_webauthn::authenticator_name(&a));
    json!({
        "id": c.id.to_base64url(),
        "digest": c.id.digest(),
        "nickname": c.nickname,
        "authenticator": name,
        "aaguid": c.aaguid,
        "created": c.created,
        "last_used": c.last_used,
        "synced": c.backup_eligible,
        "backed_up": c.backup_state,
        "kind": if c.backup_eligible { "synced" } else { "device-bound" },
        "transports": c.transports,
        "attested": c.attested,
        "revoked": c.revoked,
        "current": current.is_some_and(|d| d == c.id.digest()),
    })
}

/// `GET /api/account`: who, the keys (active first, then revoked), and
/// whether the last tap is recent enough for changes.
pub async fn account(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let session = require_session(&app, &headers, now)?;
    let p = &session.principal;
    let keys = app.store.user_with_keys(&p.subject).await?.ok_or_else(|| {
        HttpError::unauthenticated("user-unknown", "Your account no longer exists.")
    })?;
    let mut creds = keys.credentials.clone();
    creds.sort_by_key(|c| (c.revoked.is_some(), c.created));
    let active = keys.active_keys();
    let fresh_until = p.auth_time + super::FRESH_TAP.as_secs();
    Ok(json_with_cookies(
        json!({
            "subject": keys.user.subject,
            "email": keys.user.email,
            "display_name": keys.user.display_name,
            "roles": keys.user.roles,
            "auth_time": p.auth_time,
            "fresh_until": fresh_until,
            "fresh": now <= fresh_until,
            "active_keys": active,
            "keys": creds.iter().map(|c| key_json(c, Some(&p.cred))).collect::<Vec<_>>(),
        }),
        &[],
    ))
}

fn credential_id(id: &str) -> Result<CredentialId, HttpError> {
    tapgate_webauthn::base64url_decode(id)
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= 1023)
        .map(CredentialId)
        .ok_or_else(|| {
            HttpError::bad_request(
                "invalid-request",
                "The key id in the address is not a base64url credential id.",
            )
        })
}

fn key_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "key-not-found",
        "There is no such key on your account. Reload the page.",
    )
}

#[derive(Deserialize)]
pub struct Rename {
    nickname: String,
}

/// `POST /api/account/keys/{id}/rename` `{"nickname"}`.
pub async fn rename(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Rename>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let session = require_session(&app, &headers, now)?;
    let id = credential_id(&id)?;
    let nickname = super::clean_nickname(Some(body.nickname)).ok_or_else(|| {
        HttpError::bad_request(
            "nickname-invalid",
            "Give the key a name (1 to 64 characters).",
        )
    })?;
    let subject = &session.principal.subject;
    app.store
        .rename_credential(subject, &id, &nickname)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => key_not_found(),
            other => other.into(),
        })?;
    let mut ev = event("key_renamed", Outcome::Success, &ctx, &headers, client);
    ev.actor = Some(subject.to_string());
    ev.subject = Some(subject.to_string());
    ev.email = Some(session.principal.email.to_string());
    ev.credential = Some(id.digest());
    ev.target = Some(format!("key {}", id.digest()));
    app.audit.record(ev);
    Ok(json_with_cookies(
        json!({ "id": id.to_base64url(), "nickname": nickname }),
        &[],
    ))
}

#[derive(Deserialize, Default)]
pub struct Revoke {
    /// Required to revoke the last active key: afterwards only an
    /// administrator can give the account a key again.
    #[serde(default)]
    confirm_last_key: bool,
}

/// `POST /api/account/keys/{id}/revoke` `{"confirm_last_key"?}`. Revoking
/// the key of this very session ends it (the cookie is cleared).
pub async fn revoke(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Revoke>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let session = require_session(&app, &headers, now)?;
    require_fresh_tap(&session, now, "Revoking a key")?;
    let id = credential_id(&id)?;
    let p = &session.principal;
    let done = app
        .store
        .revoke_credential(&p.subject, &id, body.confirm_last_key, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => key_not_found(),
            StoreError::LastKey => last_key(),
            other => other.into(),
        })?;
    if done {
        let mut ev = event("key_revoked", Outcome::Success, &ctx, &headers, client);
        ev.actor = Some(p.subject.to_string());
        ev.subject = Some(p.subject.to_string());
        ev.email = Some(p.email.to_string());
        ev.credential = Some(id.digest());
        ev.target = Some(format!("key {}", id.digest()));
        app.audit.record(ev);
    }
    if id.digest() == p.cred {
        // This session was made with that key: it ends here (and on every
        // other instance within a second, through the feed).
        return Ok(json_with_cookies(
            json!({ "revoked": id.to_base64url(), "signed_out": true, "redirect": "/.tapgate/login" }),
            &[clear_session_cookie(&app)],
        ));
    }
    // The session lives on, re-issued to count one key fewer.
    let token = start_session(&app, p, now).await?;
    Ok(json_with_cookies(
        json!({ "revoked": id.to_base64url(), "signed_out": false }),
        &[session_cookie(&app, &token)],
    ))
}

pub(crate) fn last_key() -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        "last-key",
        "This is the only key on the account. After revoking it nobody can sign in to the account until an administrator sends a recovery invite. Add another key first, or confirm that you want to revoke it anyway.",
    )
}

/// `POST /api/account/sessions/revoke`: sign out everywhere, this browser
/// included.
pub async fn revoke_sessions(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let session = require_session(&app, &headers, now)?;
    let p = &session.principal;
    let epoch = app
        .store
        .revoke_sessions(&p.subject, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                HttpError::unauthenticated("user-unknown", "Your account no longer exists.")
            }
            other => other.into(),
        })?;
    let mut ev = event("sessions_revoked", Outcome::Success, &ctx, &headers, client);
    ev.actor = Some(p.subject.to_string());
    ev.subject = Some(p.subject.to_string());
    ev.email = Some(p.email.to_string());
    ev.target = Some(format!("user {}", p.subject));
    ev.detail = Some(format!("epoch {epoch}"));
    app.audit.record(ev);
    Ok(json_with_cookies(
        json!({ "signed_out": true, "redirect": "/.tapgate/login" }),
        &[clear_session_cookie(&app)],
    ))
}

/// `POST /api/account/device-link`: a single-use link (and its QR code)
/// that adds a key to this account from another device, valid for
/// [`DEVICE_LINK_TTL`]. Needs a recent tap: whoever holds the link can add
/// a key.
pub async fn device_link(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let session = require_session(&app, &headers, now)?;
    require_fresh_tap(&session, now, "A link for another device")?;
    let p = &session.principal;
    let user = app.store.user(&p.subject).await?.ok_or_else(|| {
        HttpError::unauthenticated("user-unknown", "Your account no longer exists.")
    })?;
    let made = crate::invite::create_recovery(
        app.store.as_ref(),
        &app.config.public_origin,
        &user,
        false,
        DEVICE_LINK_TTL,
        p.subject.as_str(),
        now,
    )
    .await?;
    let mut ev = event("invite_created", Outcome::Success, &ctx, &headers, client);
    ev.actor = Some(p.subject.to_string());
    ev.subject = Some(p.subject.to_string());
    ev.email = Some(p.email.to_string());
    ev.target = Some(format!("invite {}", &made.id[..8]));
    ev.detail = Some("device link (adds a key to the account)".into());
    app.audit.record(ev);
    Ok(json_with_cookies(
        json!({
            "id": made.id,
            "url": made.url,
            "qr": crate::invite::svg_data_url(&made.url),
            "expires": made.expires,
        }),
        &[],
    ))
}
