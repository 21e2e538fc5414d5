//! The admin page's API (`/.tapgate/api/admin/…`). Every call is checked
//! here, server-side: a live session whose token *and* stored user hold
//! the `admin` role, the user not disabled. Writes are POSTs, so the
//! router's same-origin check (CSRF) applies to them as to every write.
//! Refusals are audited (`admin_denied`).

use super::{Actor, Admin, InviteLookup, find_invite, invite_json, parse_ttl, user_json};
use crate::audit::{AuditEvent, Outcome};
use crate::error::HttpError;
use crate::login::ApiJson;
use crate::model::{CredentialId, Email, Role, Subject};
use crate::server::{App, RequestCtx, now_unix};
use crate::store::{StoreError, UserRecord};
use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// The role that may use the admin page and API.
pub const ADMIN_ROLE: &str = "admin";

/// A request that passed the admin check.
pub struct AdminCall {
    pub actor: Actor,
    pub subject: Subject,
}

/// The admin check, on every call.
async fn admin(
    app: &App,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    client: SocketAddr,
) -> Result<AdminCall, HttpError> {
    let now = now_unix();
    let session = crate::login::require_session(app, headers, now)?;
    let p = &session.principal;
    let mut base = AuditEvent::default();
    crate::gate::client_facts(&mut base, ctx, headers, client);
    let role = Role(ADMIN_ROLE.into());
    // The token says admin, and so does the store right now (a role taken
    // away a moment ago also revokes the session, but this does not wait
    // for the feed).
    let stored = app.store.user(&p.subject).await?;
    let allowed = p.has_role(&role)
        && stored
            .as_ref()
            .is_some_and(|u| !u.disabled && u.roles.contains(&role));
    if !allowed {
        let mut ev = base.clone();
        ev.event = "admin_denied";
        ev.outcome = Some(Outcome::Deny);
        ev.actor = Some(p.subject.to_string());
        ev.subject = Some(p.subject.to_string());
        ev.email = Some(p.email.to_string());
        ev.reason = Some("admin-role-missing".into());
        app.audit.record(ev);
        return Err(HttpError::forbidden(
            "admin-role-missing",
            "The admin page is for accounts with the admin role. Ask an administrator if you need it.",
        ));
    }
    Ok(AdminCall {
        actor: Actor::user(&p.subject, base),
        subject: p.subject.clone(),
    })
}

fn ops<'a>(app: &'a App, call: &AdminCall) -> Admin<'a> {
    Admin {
        store: app.store.as_ref(),
        audit: &app.audit,
        actor: call.actor.clone(),
    }
}

fn json_ok(body: Value) -> Response {
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn user_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "user-not-found",
        "There is no such user. Reload the page.",
    )
}

async fn target_user(app: &App, subject: &str) -> Result<UserRecord, HttpError> {
    app.store
        .user(&Subject(subject.to_owned()))
        .await?
        .ok_or_else(user_not_found)
}

fn self_lockout(what: &str) -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        "admin-self-lockout",
        format!(
            "You cannot {what} your own account here: you would lock yourself out. Another administrator, or `tapgate admin` on the server, can."
        ),
    )
}

/// `GET /api/admin/users`: everyone with their keys.
pub async fn users(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let users = app.store.users_with_keys().await?;
    Ok(json_ok(json!({
        "me": call.subject,
        "users": users.iter().map(user_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/admin/users/{subject}/disable`.
pub async fn disable(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    set_disabled(app, client, ctx, subject, headers, true).await
}

/// `POST /api/admin/users/{subject}/enable`.
pub async fn enable(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    set_disabled(app, client, ctx, subject, headers, false).await
}

async fn set_disabled(
    app: Arc<App>,
    client: SocketAddr,
    ctx: RequestCtx,
    subject: String,
    headers: HeaderMap,
    disabled: bool,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let user = target_user(&app, &subject).await?;
    if disabled && user.subject == call.subject {
        return Err(self_lockout("disable"));
    }
    let changed = ops(&app, &call)
        .set_disabled(&user, disabled, now_unix())
        .await?;
    Ok(json_ok(
        json!({ "subject": user.subject, "disabled": disabled, "changed": changed }),
    ))
}

/// `POST /api/admin/users/{subject}/sessions/revoke`.
pub async fn revoke_sessions(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let user = target_user(&app, &subject).await?;
    let epoch = ops(&app, &call).revoke_sessions(&user, now_unix()).await?;
    Ok(json_ok(json!({ "subject": user.subject, "epoch": epoch })))
}

#[derive(Deserialize)]
pub struct RoleChange {
    grant: Option<String>,
    revoke: Option<String>,
}

/// `POST /api/admin/users/{subject}/roles` `{"grant": ROLE}` or
/// `{"revoke": ROLE}`.
pub async fn roles(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RoleChange>,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let (text, grant) = match (body.grant, body.revoke) {
        (Some(r), None) => (r, true),
        (None, Some(r)) => (r, false),
        _ => {
            return Err(HttpError::bad_request(
                "invalid-request",
                "Send either {\"grant\": ROLE} or {\"revoke\": ROLE}.",
            ));
        }
    };
    let role = Role::parse(text.trim()).map_err(|m| HttpError::bad_request("role-invalid", m))?;
    let user = target_user(&app, &subject).await?;
    if !grant && role.as_str() == ADMIN_ROLE && user.subject == call.subject {
        return Err(self_lockout("take the admin role from"));
    }
    let roles = ops(&app, &call)
        .change_role(&user, &role, grant, now_unix())
        .await?;
    Ok(json_ok(json!({ "subject": user.subject, "roles": roles })))
}

#[derive(Deserialize, Default)]
pub struct KeyRevoke {
    #[serde(default)]
    confirm_last_key: bool,
}

/// `POST /api/admin/keys/{id}/revoke` `{"confirm_last_key"?}`.
pub async fn revoke_key(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<KeyRevoke>,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let not_found = || {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "key-not-found",
            "There is no such key. Reload the page.",
        )
    };
    let raw = tapgate_webauthn::base64url_decode(&id).map_err(|_| not_found())?;
    let key = app
        .store
        .credential(&CredentialId(raw))
        .await?
        .ok_or_else(not_found)?;
    let user = app
        .store
        .user(&key.subject)
        .await?
        .ok_or_else(user_not_found)?;
    let done = ops(&app, &call)
        .revoke_key(&user, &key, body.confirm_last_key, now_unix())
        .await
        .map_err(|e| match e {
            StoreError::LastKey => HttpError::new(
                StatusCode::CONFLICT,
                "last-key",
                "This is the user's only key: after revoking it they cannot sign in until you send them a recovery invite. Confirm to revoke it anyway.",
            ),
            other => other.into(),
        })?;
    Ok(json_ok(
        json!({ "id": key.id.to_base64url(), "subject": user.subject, "changed": done }),
    ))
}

/// `GET /api/admin/invites`: every invite, newest first, with its state.
pub async fn invites(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    admin(&app, &headers, &ctx, client).await?;
    let now = now_unix();
    let all = app.store.invites().await?;
    Ok(json_ok(json!({
        "invites": all.iter().map(|i| invite_json(i, now)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct NewInvite {
    /// A new user: their email and roles.
    email: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    /// Or recovery: the existing user (subject or email).
    recover: Option<String>,
    #[serde(default)]
    revoke_other_keys: bool,
    /// Lifetime, like `24h` (default 24 h).
    ttl: Option<String>,
}

/// `POST /api/admin/invites`: a new-user or recovery invite; answers its
/// link and a QR code of it (`qr`, an SVG `data:` URL).
pub async fn create_invite(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewInvite>,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let now = now_unix();
    let ttl = parse_ttl(body.ttl.as_deref().unwrap_or("24h"))
        .map_err(|m| HttpError::bad_request("ttl-invalid", format!("The lifetime {m}.")))?;
    let origin = &app.config.public_origin;
    let ops = ops(&app, &call);
    let (made, about) = match (body.email, body.recover) {
        (Some(email), None) => {
            let email =
                Email::parse(&email).map_err(|m| HttpError::bad_request("email-invalid", m))?;
            let roles = body
                .roles
                .iter()
                .map(|r| Role::parse(r.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| HttpError::bad_request("role-invalid", m))?;
            if app.store.user_by_email(&email).await?.is_some() {
                return Err(HttpError::new(
                    StatusCode::CONFLICT,
                    "user-exists",
                    format!(
                        "{email} already has an account. To give them a new key, create a recovery invite instead."
                    ),
                ));
            }
            let made = ops.invite(origin, email.clone(), roles, ttl, now).await?;
            (made, json!({ "email": email }))
        }
        (None, Some(who)) => {
            let user = match Email::parse(&who) {
                Ok(email) => app.store.user_by_email(&email).await?,
                Err(_) => app.store.user(&Subject(who.trim().to_owned())).await?,
            }
            .ok_or_else(user_not_found)?;
            let made = ops
                .recovery_invite(origin, &user, body.revoke_other_keys, ttl, now)
                .await?;
            (
                made,
                json!({ "email": user.email, "recovery_for": user.subject, "revoke_other_keys": body.revoke_other_keys }),
            )
        }
        _ => {
            return Err(HttpError::bad_request(
                "invalid-request",
                "Send {\"email\", \"roles\"} for a new user, or {\"recover\": EMAIL} for a recovery invite.",
            ));
        }
    };
    let mut body = json!({
        "id": made.id,
        "short_id": super::short_id(&made.id),
        "url": made.url,
        "qr": crate::invite::svg_data_url(&made.url),
        "expires": made.expires,
    });
    if let (Some(b), Some(a)) = (body.as_object_mut(), about.as_object()) {
        b.extend(a.clone());
    }
    Ok(json_ok(body))
}

/// `POST /api/admin/invites/{id}/cancel` (the id or a unique prefix).
pub async fn cancel_invite(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let call = admin(&app, &headers, &ctx, client).await?;
    let now = now_unix();
    let all = app.store.invites().await?;
    let invite = find_invite(&all, &id).map_err(|e| match e {
        InviteLookup::NotFound => HttpError::new(
            StatusCode::NOT_FOUND,
            "invite-not-found",
            "There is no such invite. Reload the page.",
        ),
        InviteLookup::Ambiguous(n) => HttpError::bad_request(
            "invite-ambiguous",
            format!("{n} invites start with that id; give more of it."),
        ),
    })?;
    ops(&app, &call)
        .cancel_invite(invite, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => HttpError::new(
                StatusCode::CONFLICT,
                "invite-not-pending",
                "This invite was already used, cancelled, or has expired.",
            ),
            other => other.into(),
        })?;
    Ok(json_ok(
        json!({ "id": invite.token_hash, "state": "cancelled" }),
    ))
}
