//! Registration from an invite: options → navigator.credentials.create()
//! → verify → user + credential stored atomically → signed in.

use super::{
    ApiJson, audited, ceremony_cookie, clear_ceremony_cookie, event, json_with_cookies,
    session_cookie, take_ceremony, webauthn_error,
};
use crate::audit::Outcome;
use crate::error::HttpError;
use crate::model::{AuthnFacts, CredentialId, Principal, Subject};
use crate::server::{App, RequestCtx, now_unix};
use crate::store::{StoreError, UserRecord};
use crate::token::{CeremonyKind, CeremonyState};
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct RegisterOptionsRequest {
    invite: Option<String>,
}

fn invite_unavailable() -> HttpError {
    HttpError::bad_request(
        "invite-invalid",
        "This invite link is unknown, already used or expired. Ask your administrator for a new one.",
    )
}

pub async fn register_options(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<RegisterOptionsRequest>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let token = body
        .invite
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            HttpError::bad_request(
                "invite-missing",
                "Open the invite link you were given; it carries the invite code.",
            )
        })?;
    let hash = crate::crypto::sha256_hex(token.as_bytes());
    let invite = app
        .store
        .invite(&hash, now)
        .await?
        .ok_or_else(invite_unavailable)?;
    if app.store.user_by_email(&invite.email).await?.is_some() {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "user-exists",
            format!(
                "{} is already registered. Sign in instead, or ask an administrator to add a key to your account.",
                invite.email
            ),
        ));
    }
    let subject = Subject::generate();
    let challenge = crate::crypto::random_bytes(32);
    let ttl = app.config.challenge_ttl.as_secs();
    let mut state = CeremonyState::new(&app.keys, CeremonyKind::Register, &challenge, now, ttl);
    state.sub = Some(subject.clone());
    state.email = Some(invite.email.clone());
    state.roles = invite.roles.clone();
    state.invite = Some(hash);
    let sealed = app.keys.seal_ceremony(&state);
    let uv = uv_str(&app);
    let options = json!({
        "rp": { "id": app.config.rp_id, "name": app.config.rp_name },
        "user": {
            "id": tapgate_webauthn::base64url(subject.as_str().as_bytes()),
            "name": invite.email,
            "displayName": invite.email,
        },
        "challenge": tapgate_webauthn::base64url(&challenge),
        "pubKeyCredParams": [
            { "type": "public-key", "alg": -7 },
            { "type": "public-key", "alg": -8 },
            { "type": "public-key", "alg": -257 },
        ],
        "timeout": ttl * 1000,
        "excludeCredentials": [],
        "authenticatorSelection": { "residentKey": "required", "requireResidentKey": true, "userVerification": uv },
        // Ask for the maker's certificate only when some rule needs it:
        // browsers may show an extra privacy prompt for it.
        "attestation": if app.policy.load().wants_attestation() { "direct" } else { "none" },
        "extensions": { "credProps": true },
    });
    Ok(json_with_cookies(
        json!({
            "publicKey": options,
            "ceremony": sealed,
            "invite": { "email": invite.email, "roles": invite.roles },
        }),
        &[ceremony_cookie(&app, &sealed)],
    ))
}

pub(super) fn uv_str(app: &App) -> &'static str {
    match app.config.user_verification {
        tapgate_webauthn::UserVerification::Required => "required",
        tapgate_webauthn::UserVerification::Preferred => "preferred",
        tapgate_webauthn::UserVerification::Discouraged => "discouraged",
    }
}

#[derive(Deserialize)]
pub struct RegisterVerifyRequest {
    credential: tapgate_webauthn::RegistrationResponseJson,
    nickname: Option<String>,
    ceremony: Option<String>,
}

pub async fn register_verify(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterVerifyRequest>,
) -> Result<Response, HttpError> {
    let now = now_unix();
    let mut ev = event("registration", Outcome::Failure, &ctx, &headers, client);
    let result = register(&app, &headers, body, now, &mut ev).await;
    audited(&app, ev, result)
}

async fn register(
    app: &App,
    headers: &HeaderMap,
    body: RegisterVerifyRequest,
    now: u64,
    ev: &mut crate::audit::AuditEvent,
) -> Result<Response, HttpError> {
    let (state, challenge) = take_ceremony(
        app,
        headers,
        body.ceremony.as_deref(),
        CeremonyKind::Register,
        now,
    )
    .await?;
    let (Some(subject), Some(email), Some(invite)) = (state.sub, state.email, state.invite) else {
        return Err(HttpError::bad_request(
            "ceremony-invalid",
            "The ceremony state is incomplete. Start again from the invite link.",
        ));
    };
    ev.subject = Some(subject.to_string());
    ev.email = Some(email.to_string());
    let reg = tapgate_webauthn::verify_registration(
        &app.rp,
        &challenge,
        &body.credential,
        std::time::SystemTime::now(),
    )
    .map_err(|e| webauthn_error(&e))?;
    let cred_id = CredentialId(reg.credential_id.clone());
    ev.credential = Some(cred_id.digest());
    // Attested means: the statement's chain ends at a root trusted now.
    // A chain that does not verify is not an error (attestation is
    // optional) unless the deployment accepts hardware keys only.
    let root = super::attestation_root(app, &reg);
    let record = super::new_credential(&reg, root.clone(), &subject, body.nickname, now);
    let facts = AuthnFacts {
        attested: root.is_some(),
        root,
        uv: reg.flags.uv,
        synced: reg.flags.be,
        aaguid: record.aaguid.clone(),
    };
    refuse_below_floor(app, &facts)?;
    let user = UserRecord {
        subject: subject.clone(),
        email: email.clone(),
        display_name: email.to_string(),
        roles: state.roles.clone(),
        disabled: false,
        created: now,
    };
    app.store
        .register_with_invite(&invite, &user, &record, now)
        .await
        .map_err(|e| match e {
            StoreError::InviteUnavailable => invite_unavailable(),
            StoreError::EmailTaken => HttpError::new(
                StatusCode::CONFLICT,
                "user-exists",
                format!("{email} is already registered. Sign in instead."),
            ),
            StoreError::DuplicateCredential => HttpError::new(
                StatusCode::CONFLICT,
                "credential-already-registered",
                "This key is already registered. Sign in with it instead.",
            ),
            other => other.into(),
        })?;
    let principal = Principal {
        subject,
        email,
        roles: state.roles,
        auth_time: now,
        cred: cred_id.digest(),
        authn: facts,
        keys: 0,
    };
    let token = super::start_session(app, &principal, now).await?;
    Ok(json_with_cookies(
        json!({ "redirect": "/", "subject": principal.subject, "email": principal.email }),
        &[session_cookie(app, &token), clear_ceremony_cookie(app)],
    ))
}

/// A deployment-wide floor (`[trust] credentials = "hardware"`,
/// `allow_synced = false`): a key that can never satisfy it is refused at
/// registration, with the accepted kinds named.
pub(super) fn refuse_below_floor(app: &App, facts: &AuthnFacts) -> Result<(), HttpError> {
    let policy = app.policy.load();
    let floor = policy.trust().global;
    let probe = Principal {
        subject: Subject(String::new()),
        email: crate::model::Email(String::new()),
        roles: Vec::new(),
        auth_time: 0,
        cred: String::new(),
        authn: facts.clone(),
        keys: 0,
    };
    if floor.hardware && !policy.trust().is_hardware(&probe) {
        return Err(HttpError::bad_request(
            "credential-not-accepted",
            format!(
                "This site accepts only approved hardware security keys: {}. Register one of those.",
                crate::gate::accepted_authenticators(&policy)
            ),
        ));
    }
    if floor.deny_synced && facts.synced {
        return Err(HttpError::bad_request(
            "credential-synced",
            "This site does not accept synced passkeys. Register a device-bound security key instead.",
        ));
    }
    if floor.require_uv && !facts.uv {
        return Err(HttpError::bad_request(
            "user-verification-missing",
            "This site needs a key that checks your PIN or fingerprint.",
        ));
    }
    Ok(())
}
