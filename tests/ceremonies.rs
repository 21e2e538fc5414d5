//! The WebAuthn ceremonies over HTTP (PRODUCT.md §2), driven by a real
//! software authenticator: invite → register → session, sign-in with a
//! discoverable credential or by email, and every way a ceremony is refused.
//! Each refusal asserts the status and the stable reason code, so each case
//! is shown to reach the check it names.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const REGISTER_OPTIONS: &str = "/.tapgate/api/register/options";
const REGISTER_VERIFY: &str = "/.tapgate/api/register/verify";
const LOGIN_OPTIONS: &str = "/.tapgate/api/login/options";
const LOGIN_VERIFY: &str = "/.tapgate/api/login/verify";

fn ceremony(opts: &Value) -> &str {
    opts["ceremony"].as_str().expect("options carry a ceremony")
}

/// Edit a sealed ceremony's payload without re-signing it.
fn tamper(sealed: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = sealed.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut payload = jwt_payload(sealed);
    edit(&mut payload);
    format!(
        "{}.{}.{}",
        parts[0],
        base64url(payload.to_string().as_bytes()),
        parts[2]
    )
}

// ------------------------------------------------------------ happy paths

#[tokio::test]
async fn register_options_ask_for_a_verified_discoverable_passkey_for_this_site() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let reply = gate
        .post(REGISTER_OPTIONS, &json!({ "invite": invite }))
        .await;
    let body = reply.ok_json();
    let pk = &body["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["user"]["name"], "ann@example.com");
    assert_eq!(
        base64url_decode(pk["challenge"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["attestation"], "none");
    assert!(
        pk["pubKeyCredParams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["alg"] == -7)
    );
    assert_eq!(body["invite"]["email"], "ann@example.com");
    assert_eq!(body["invite"]["roles"], json!(["member"]));
    // The ceremony state also travels in a short-lived, API-scoped cookie.
    let line = reply
        .set_cookie_line("tapgate_ceremony")
        .expect("ceremony cookie");
    assert_eq!(
        reply.cookie("tapgate_ceremony").as_deref(),
        Some(ceremony(&body))
    );
    for attr in [
        "Path=/.tapgate/api/",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=120",
    ] {
        assert!(line.contains(attr), "{attr} missing in {line}");
    }
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn invite_registers_a_passkey_and_signs_the_user_in() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member", "ops"]).await;
    let mut key = SoftKey::new();
    let opts = gate.register_options(&invite).await;
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = gate.register_verify(&cred, ceremony(&opts)).await;
    let body = reply.ok_json();
    assert_eq!(body["redirect"], "/");
    assert_eq!(body["email"], "ann@example.com");
    let subject = body["subject"].as_str().expect("subject").to_owned();

    // Session cookie: HttpOnly, Lax, whole site, 1 h; not Secure on http://localhost.
    let line = reply
        .set_cookie_line("tapgate_session")
        .expect("session cookie");
    for attr in ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"] {
        assert!(line.contains(attr), "{attr} missing in {line}");
    }
    assert!(!line.contains("Secure"), "{line}");
    // The ceremony cookie is cleared.
    assert_eq!(reply.cookie("tapgate_ceremony").as_deref(), Some(""));

    // The session works: the account API knows the user and the key.
    let token = reply.cookie("tapgate_session").unwrap();
    let me = gate
        .get(
            "/.tapgate/api/me",
            &[("cookie", &format!("tapgate_session={token}"))],
        )
        .await
        .ok_json();
    assert_eq!(me["subject"], subject.as_str());
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["roles"], json!(["member", "ops"]));
    let creds = me["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["id"], base64url(&key.credential_id().unwrap()));
    assert_eq!(creds[0]["nickname"], "test key");
    assert_eq!(creds[0]["aaguid"], AAGUID_TEXT);
    assert_eq!(creds[0]["current"], true);

    // And it gets through the gate.
    let r = gate
        .get("/", &[("cookie", &format!("tapgate_session={token}"))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        gate.upstream.one("/").header("x-tapgate-user"),
        Some(subject.as_str())
    );
}

#[tokio::test]
async fn discoverable_login_redirects_to_the_sanitized_rd() {
    let gate = TestGate::start().await;
    let (mut key, registered) = gate.user("ann@example.com", &["member"]).await;
    for (rd, expected) in [
        (
            "/reports/2024?month=5&view=full",
            "/reports/2024?month=5&view=full",
        ),
        ("/.tapgate/account", "/.tapgate/account"),
        ("//evil.example/steal", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/.tapgate/api/login/verify", "/"),
    ] {
        let opts = gate.login_options(&json!({ "rd": rd })).await;
        // Discoverable: the server names no credential.
        assert_eq!(opts["publicKey"]["allowCredentials"], json!([]), "{rd}");
        assert_eq!(opts["publicKey"]["rpId"], "localhost");
        assert_eq!(opts["publicKey"]["userVerification"], "required");
        let cred = key
            .get(&gate.origin, &opts["publicKey"], &ClientData::default())
            .await;
        assert!(
            cred["response"]["userHandle"].is_string(),
            "discoverable credentials name their user"
        );
        let reply = gate.login_verify(&cred, ceremony(&opts)).await;
        let body = reply.ok_json();
        assert_eq!(body["redirect"], expected, "rd {rd:?}");
        assert_eq!(body["subject"], registered.body["subject"]);
        // A browser (it sent Origin) gets the cookie only, never the token in the body.
        assert!(body["token"].is_null(), "{body}");
        assert!(
            reply
                .cookie("tapgate_session")
                .is_some_and(|t| !t.is_empty())
        );
    }
}

#[tokio::test]
async fn login_by_email_lists_the_users_credential_and_unknown_email_looks_the_same() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let id = base64url(&key.credential_id().unwrap());

    let opts = gate
        .login_options(&json!({ "email": "ann@example.com" }))
        .await;
    let allow = opts["publicKey"]["allowCredentials"].as_array().unwrap();
    assert_eq!(allow.len(), 1, "{allow:?}");
    assert_eq!(allow[0]["type"], "public-key");
    assert_eq!(allow[0]["id"], id.as_str());
    assert!(allow[0]["transports"].is_array());
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&cred, ceremony(&opts)).await.ok_json();

    // No enumeration: an unknown address gets the same shape, just no ids.
    let unknown = gate
        .login_options(&json!({ "email": "nobody@example.com" }))
        .await;
    assert_eq!(unknown["publicKey"]["allowCredentials"], json!([]));
    let mut a = opts["publicKey"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    let mut b = unknown["publicKey"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    gate.post(LOGIN_OPTIONS, &json!({ "email": "not an email" }))
        .await
        .assert_error(400, "email-invalid");
}

#[tokio::test]
async fn ceremony_state_may_come_from_the_cookie_alone() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let reply = gate.post(LOGIN_OPTIONS, &json!({})).await;
    let opts = reply.ok_json();
    let cookie = reply.cookie("tapgate_ceremony").expect("ceremony cookie");
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let r = gate
        .post_with(
            LOGIN_VERIFY,
            &json!({ "credential": cred }),
            &[("cookie", &format!("tapgate_ceremony={cookie}"))],
        )
        .await;
    r.ok_json();
    // Neither field nor cookie: nothing to finish.
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.post(LOGIN_VERIFY, &json!({ "credential": cred }))
        .await
        .assert_error(400, "ceremony-missing");
}

#[tokio::test]
async fn a_non_browser_client_gets_its_session_token_in_the_body() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    // No Origin, no Sec-Fetch-Site: a CLI.
    let reply = gate
        .send(
            gate.http
                .post(gate.url(LOGIN_VERIFY))
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(json!({ "credential": cred, "ceremony": ceremony(&opts) }).to_string()),
        )
        .await;
    let body = reply.ok_json();
    let token = body["token"].as_str().expect("token in the body for a CLI");
    assert_eq!(Some(token.to_owned()), reply.cookie("tapgate_session"));
    let r = gate
        .get(
            "/cli",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn user_verification_preferred_accepts_a_key_without_uv_and_says_so_upstream() {
    let gate =
        TestGate::start_with("", &[("TAPGATE_WEBAUTHN__USER_VERIFICATION", "preferred")]).await;
    let invite = gate.invite("bob@example.com", &["member"]).await;
    let mut key = SoftKey::without_uv();
    gate.register(&mut key, &invite).await;
    let session = gate.login(&mut key).await;
    let r = gate.get("/uv", &[("cookie", &session.cookie())]).await;
    assert_eq!(r.status, 200);
    let jwt = gate
        .upstream
        .one("/uv")
        .header("x-tapgate-assertion")
        .unwrap()
        .to_owned();
    let claims = jwt_payload(&jwt);
    assert_eq!(claims["authn"]["uv"], false);
    // passkey-authenticator makes synced (backup-eligible) passkeys: "swk".
    assert_eq!(claims["authn"]["synced"], true);
    assert_eq!(
        claims["amr"],
        json!(["swk", "user"]),
        "no UV: not multi-factor"
    );
}

// ------------------------------------------------------------ body handling

#[tokio::test]
async fn malformed_json_is_400_invalid_json_on_every_ceremony_endpoint() {
    let gate = TestGate::start().await;
    for path in [
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
    ] {
        let r = gate.post_body(path, "{\"invite\": \"abc\"").await;
        r.assert_error(400, "invalid-json");
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_400_invalid_request() {
    let gate = TestGate::start().await;
    for (path, body) in [
        (REGISTER_VERIFY, json!({ "credential": 5 })),
        (LOGIN_VERIFY, json!({ "credential": { "id": "AA" } })),
        (REGISTER_OPTIONS, json!({ "invite": ["a"] })),
    ] {
        gate.post(path, &body)
            .await
            .assert_error(400, "invalid-request");
    }
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let gate = TestGate::start().await;
    for path in [
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
    ] {
        let r = gate
            .send(
                gate.http
                    .post(gate.url(path))
                    .header("origin", &gate.origin)
                    .body("{}"),
            )
            .await;
        r.assert_error(415, "json-content-type-required");
        let r = gate
            .send(
                gate.http
                    .post(gate.url(path))
                    .header("origin", &gate.origin)
                    .header("content-type", "text/plain")
                    .body("{}"),
            )
            .await;
        r.assert_error(415, "json-content-type-required");
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let gate = TestGate::start().await;
    let big = json!({ "invite": "x".repeat(64 * 1024 + 1) });
    for path in [
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
    ] {
        gate.post(path, &big)
            .await
            .assert_error(413, "body-too-large");
    }
    // Just under the limit is parsed (and refused for its content instead).
    let under = json!({ "invite": "x".repeat(60 * 1024) });
    gate.post(REGISTER_OPTIONS, &under)
        .await
        .assert_error(400, "invite-missing");
}

#[tokio::test]
async fn cross_site_posts_are_403_cross_origin_request() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let body = json!({ "invite": invite });
    for path in [
        REGISTER_OPTIONS,
        REGISTER_VERIFY,
        LOGIN_OPTIONS,
        LOGIN_VERIFY,
        "/.tapgate/logout",
    ] {
        let r = gate
            .send(
                gate.http
                    .post(gate.url(path))
                    .header("origin", "https://evil.example")
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(body.to_string()),
            )
            .await;
        r.assert_error(403, "cross-origin-request");
        // No Origin, but the browser says the request is cross-site.
        let r = gate
            .send(
                gate.http
                    .post(gate.url(path))
                    .header("sec-fetch-site", "cross-site")
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(body.to_string()),
            )
            .await;
        r.assert_error(403, "cross-origin-request");
    }
    // Another port of localhost is another origin.
    let r = gate
        .send(
            gate.http
                .post(gate.url(REGISTER_OPTIONS))
                .header("origin", "http://localhost:1")
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await;
    r.assert_error(403, "cross-origin-request");
    // The invite was never looked at: it still works.
    gate.register_options(&invite).await;
}

// ------------------------------------------------------------ client data

async fn register_with(gate: &TestGate, cd: ClientData) -> Reply {
    let invite = gate.invite("eve@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key.create(&gate.origin, &opts["publicKey"], &cd).await;
    gate.register_verify(&cred, ceremony(&opts)).await
}

async fn login_with(gate: &TestGate, key: &mut SoftKey, cd: ClientData) -> Reply {
    let opts = gate.login_options(&json!({})).await;
    let cred = key.get(&gate.origin, &opts["publicKey"], &cd).await;
    gate.login_verify(&cred, ceremony(&opts)).await
}

#[tokio::test]
async fn register_from_another_origin_is_origin_mismatch() {
    let gate = TestGate::start().await;
    for origin in [
        "https://evil.example",
        "https://localhost",
        "http://localhost:1",
        "http://127.0.0.1",
    ] {
        let cd = ClientData {
            origin: Some(origin.into()),
            ..Default::default()
        };
        register_with(&gate, cd)
            .await
            .assert_error(400, "origin-mismatch");
    }
}

#[tokio::test]
async fn login_from_another_origin_is_origin_mismatch() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let cd = ClientData {
        origin: Some("https://evil.example".into()),
        ..Default::default()
    };
    login_with(&gate, &mut key, cd)
        .await
        .assert_error(400, "origin-mismatch");
}

#[tokio::test]
async fn register_inside_a_cross_origin_frame_is_refused() {
    let gate = TestGate::start().await;
    let cd = ClientData {
        cross_origin: Some(true),
        ..Default::default()
    };
    register_with(&gate, cd)
        .await
        .assert_error(400, "cross-origin-refused");
}

#[tokio::test]
async fn login_inside_a_cross_origin_frame_is_refused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let cd = ClientData {
        cross_origin: Some(true),
        ..Default::default()
    };
    login_with(&gate, &mut key, cd)
        .await
        .assert_error(400, "cross-origin-refused");
}

#[tokio::test]
async fn register_under_a_foreign_top_origin_is_refused() {
    let gate = TestGate::start().await;
    let cd = ClientData {
        top_origin: Some("https://evil.example".into()),
        ..Default::default()
    };
    register_with(&gate, cd)
        .await
        .assert_error(400, "top-origin-refused");
}

#[tokio::test]
async fn login_under_a_foreign_top_origin_is_refused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let cd = ClientData {
        top_origin: Some("https://evil.example".into()),
        ..Default::default()
    };
    login_with(&gate, &mut key, cd)
        .await
        .assert_error(400, "top-origin-refused");
}

#[tokio::test]
async fn register_signed_for_another_rp_id_is_rp_id_mismatch() {
    let gate = TestGate::start().await;
    let cd = ClientData {
        rp_id: Some("evil.example".into()),
        ..Default::default()
    };
    register_with(&gate, cd)
        .await
        .assert_error(400, "rp-id-mismatch");
}

#[tokio::test]
async fn login_signed_for_another_rp_id_is_rp_id_mismatch() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let cd = ClientData {
        rp_id: Some("evil.example".into()),
        ..Default::default()
    };
    login_with(&gate, &mut key, cd)
        .await
        .assert_error(400, "rp-id-mismatch");
}

#[tokio::test]
async fn client_data_edited_after_signing_fails_the_signature() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    // Same meaning, different bytes: the signature covers the exact bytes.
    let mut cd = client_data_of(&cred);
    cd["extra"] = "x".into();
    let forged = with_client_data(&cred, &cd.to_string());
    gate.login_verify(&forged, ceremony(&opts))
        .await
        .assert_error(400, "signature-invalid");
}

#[tokio::test]
async fn a_user_handle_naming_someone_else_is_refused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let (_, other) = gate.user("bob@example.com", &["admin"]).await;
    let opts = gate.login_options(&json!({})).await;
    let mut cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    // userHandle is not covered by the signature: claim to be bob.
    let bob = other.body["subject"].as_str().unwrap();
    cred["response"]["userHandle"] = base64url(bob.as_bytes()).into();
    gate.login_verify(&cred, ceremony(&opts))
        .await
        .assert_error(400, "user-handle-mismatch");
}

// ------------------------------------------------------------ ceremony state

#[tokio::test]
async fn a_registration_answer_replayed_is_challenge_reused() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.register_verify(&cred, ceremony(&opts)).await.ok_json();
    gate.register_verify(&cred, ceremony(&opts))
        .await
        .assert_error(400, "challenge-reused");
}

#[tokio::test]
async fn a_login_answer_replayed_is_challenge_reused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&cred, ceremony(&opts)).await.ok_json();
    gate.login_verify(&cred, ceremony(&opts))
        .await
        .assert_error(400, "challenge-reused");
}

#[tokio::test]
async fn a_failed_answer_still_burns_the_challenge() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let opts = gate.login_options(&json!({})).await;
    let bad = key
        .get(
            &gate.origin,
            &opts["publicKey"],
            &ClientData {
                origin: Some("https://evil.example".into()),
                ..Default::default()
            },
        )
        .await;
    gate.login_verify(&bad, ceremony(&opts))
        .await
        .assert_error(400, "origin-mismatch");
    // A second try on the same challenge, even an honest one, is refused.
    let good = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&good, ceremony(&opts))
        .await
        .assert_error(400, "challenge-reused");
}

#[tokio::test]
async fn an_expired_registration_ceremony_is_refused() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let now = now_unix();
    let expired = gate.reseal(ceremony(&opts), |s| {
        s.iat = now - 300;
        s.exp = now - 1;
    });
    gate.register_verify(&cred, &expired)
        .await
        .assert_error(400, "ceremony-expired");
}

#[tokio::test]
async fn an_expired_login_ceremony_is_refused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    let opts = gate.login_options(&json!({})).await;
    let cred = key
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let now = now_unix();
    let expired = gate.reseal(ceremony(&opts), |s| {
        s.iat = now - 300;
        s.exp = now - 1;
    });
    gate.login_verify(&cred, &expired)
        .await
        .assert_error(400, "ceremony-expired");
}

#[tokio::test]
async fn a_login_ceremony_cannot_finish_a_registration_and_vice_versa() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    // A registration answer with a sign-in ceremony state.
    let invite = gate.invite("bob@example.com", &["member"]).await;
    let reg = gate.register_options(&invite).await;
    let mut bob = SoftKey::new();
    let cred = bob
        .create(&gate.origin, &reg["publicKey"], &ClientData::default())
        .await;
    let login = gate.login_options(&json!({})).await;
    gate.register_verify(&cred, ceremony(&login))
        .await
        .assert_error(400, "ceremony-wrong-kind");
    // A sign-in answer with a registration ceremony state.
    let assertion = key
        .get(&gate.origin, &login["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&assertion, ceremony(&reg))
        .await
        .assert_error(400, "ceremony-wrong-kind");
    // Neither refusal burned a challenge: both ceremonies still finish.
    gate.register_verify(&cred, ceremony(&reg)).await.ok_json();
    gate.login_verify(&assertion, ceremony(&login))
        .await
        .ok_json();
}

#[tokio::test]
async fn a_tampered_ceremony_state_is_refused_and_grants_nothing() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    // Promote ourselves to admin in the (signed, not encrypted) state.
    let forged = tamper(ceremony(&opts), |p| p["roles"] = json!(["admin"]));
    gate.register_verify(&cred, &forged)
        .await
        .assert_error(400, "ceremony-invalid");
    // Truncated signature, garbage, a state sealed by another gate's key.
    let sealed = ceremony(&opts);
    gate.register_verify(&cred, &sealed[..sealed.len() - 3])
        .await
        .assert_error(400, "ceremony-invalid");
    gate.register_verify(&cred, "not-a-token")
        .await
        .assert_error(400, "ceremony-invalid");
    let other = TestGate::start().await;
    // The same state, signed by a key this gate does not know.
    let foreign = other.reseal(sealed, |_| {});
    gate.register_verify(&cred, &foreign)
        .await
        .assert_error(400, "ceremony-invalid");
    // The honest state still finishes, with the invite's roles only.
    let body = gate.register_verify(&cred, sealed).await.ok_json();
    assert_eq!(body["email"], "ann@example.com");
    let session = gate.login(&mut key).await;
    let r = gate.get("/roles", &[("cookie", &session.cookie())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gate.upstream.one("/roles").header("x-tapgate-roles"),
        Some("member")
    );
}

// ------------------------------------------------------------ credentials

#[tokio::test]
async fn an_unregistered_credential_is_credential_unknown() {
    let gate = TestGate::start().await;
    gate.user("ann@example.com", &["member"]).await;
    // A second authenticator, registered with another tapgate only.
    let elsewhere = TestGate::start().await;
    let (mut stranger, _) = elsewhere.user("mallory@example.com", &["admin"]).await;
    login_with(&gate, &mut stranger, ClientData::default())
        .await
        .assert_error(401, "credential-unknown");
}

#[tokio::test]
async fn registering_without_user_verification_is_refused() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::without_uv();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.register_verify(&cred, ceremony(&opts))
        .await
        .assert_error(400, "user-not-verified");
    // Nothing was stored: the invite still works for a key with UV.
    gate.register(&mut SoftKey::new(), &invite).await;
}

#[tokio::test]
async fn signing_in_without_user_verification_is_refused() {
    let gate = TestGate::start().await;
    let (mut key, _) = gate.user("ann@example.com", &["member"]).await;
    key.uv = false; // the PIN is skipped this time
    login_with(&gate, &mut key, ClientData::default())
        .await
        .assert_error(400, "user-not-verified");
}

#[tokio::test]
async fn registering_the_same_credential_twice_is_409_and_writes_nothing() {
    let gate = TestGate::start().await;
    let first = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&first).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.register_verify(&cred, ceremony(&opts)).await.ok_json();

    // A second invite, answered with the same credential: with "none"
    // attestation nothing but clientDataJSON binds the answer to the
    // challenge, so a client can present the same public key again.
    let second = gate.invite("ann2@example.com", &["admin"]).await;
    let opts2 = gate.register_options(&second).await;
    let mut cd = client_data_of(&cred);
    cd["challenge"] = opts2["publicKey"]["challenge"].clone();
    let again = with_client_data(&cred, &cd.to_string());
    gate.register_verify(&again, ceremony(&opts2))
        .await
        .assert_error(409, "credential-already-registered");
    // Atomic: the second invite was not consumed and no user was created.
    let r = gate
        .post(REGISTER_OPTIONS, &json!({ "invite": second }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ------------------------------------------------------------ invites

#[tokio::test]
async fn an_invite_is_single_use() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    gate.register(&mut SoftKey::new(), &invite).await;
    gate.post(REGISTER_OPTIONS, &json!({ "invite": invite }))
        .await
        .assert_error(400, "invite-invalid");
}

#[tokio::test]
async fn two_ceremonies_racing_for_one_invite_register_once() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let a = gate.register_options(&invite).await;
    let b = gate.register_options(&invite).await;
    let cred_a = SoftKey::new()
        .create(&gate.origin, &a["publicKey"], &ClientData::default())
        .await;
    let cred_b = SoftKey::new()
        .create(&gate.origin, &b["publicKey"], &ClientData::default())
        .await;
    gate.register_verify(&cred_a, ceremony(&a)).await.ok_json();
    gate.register_verify(&cred_b, ceremony(&b))
        .await
        .assert_error(400, "invite-invalid");
}

#[tokio::test]
async fn unknown_missing_and_expired_invites_are_refused() {
    let gate = TestGate::start().await;
    gate.post(REGISTER_OPTIONS, &json!({ "invite": "no-such-invite" }))
        .await
        .assert_error(400, "invite-invalid");
    gate.post(REGISTER_OPTIONS, &json!({}))
        .await
        .assert_error(400, "invite-missing");
    gate.post(REGISTER_OPTIONS, &json!({ "invite": "" }))
        .await
        .assert_error(400, "invite-missing");
    let expired = gate
        .invite_at(
            "ann@example.com",
            &["member"],
            now_unix() - 7200,
            Duration::from_secs(3600),
        )
        .await;
    gate.post(REGISTER_OPTIONS, &json!({ "invite": expired }))
        .await
        .assert_error(400, "invite-invalid");
}

#[tokio::test]
async fn an_invite_for_a_registered_email_is_409_user_exists() {
    let gate = TestGate::start().await;
    gate.user("ann@example.com", &["member"]).await;
    let again = gate.invite("ann@example.com", &["admin"]).await;
    gate.post(REGISTER_OPTIONS, &json!({ "invite": again }))
        .await
        .assert_error(409, "user-exists");
}

#[tokio::test]
async fn a_cloned_security_key_is_caught_by_its_signature_counter() {
    let gate = TestGate::start().await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let mut key = SoftKey::with_counter();
    gate.register(&mut key, &invite).await;
    let mut clone = key.clone();
    gate.login(&mut key).await;
    gate.login(&mut key).await;
    // The clone's counter is behind the original's.
    login_with(&gate, &mut clone, ClientData::default())
        .await
        .assert_error(400, "sign-count-regressed");
}

#[tokio::test]
async fn any_instance_finishes_a_ceremony_another_began_and_a_challenge_is_used_once() {
    let a = TestGate::start().await;
    let b = a.sibling().await;
    // Registration begun on A, finished on B.
    let invite = a.invite("ann@example.com", &["member"]).await;
    let opts = a.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&a.origin, &opts["publicKey"], &ClientData::default())
        .await;
    b.register_verify(&cred, ceremony(&opts)).await.ok_json();
    // Sign-in begun on B, finished on A; the replay on B is refused.
    let opts = b.login_options(&json!({})).await;
    let cred = key
        .get(&b.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = a.login_verify(&cred, ceremony(&opts)).await;
    reply.ok_json();
    b.login_verify(&cred, ceremony(&opts))
        .await
        .assert_error(400, "challenge-reused");
    // The session A issued is good on B, without a database lookup.
    let token = reply.cookie("tapgate_session").unwrap();
    let r = b
        .get(
            "/elsewhere",
            &[("cookie", &format!("tapgate_session={token}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn session_and_assertion_lifetimes_and_audience_follow_the_config() {
    let gate = TestGate::start_with(
        "[session]\nttl = \"2m\"\n[assertion]\nttl = \"300s\"\naudience = \"https://api.example.com\"\n",
        &[],
    )
    .await;
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let opts = gate.register_options(&invite).await;
    let mut key = SoftKey::new();
    let cred = key
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = gate.register_verify(&cred, ceremony(&opts)).await;
    reply.ok_json();
    let line = reply.set_cookie_line("tapgate_session").unwrap();
    assert!(line.contains("Max-Age=120"), "{line}");
    let token = reply.cookie("tapgate_session").unwrap();
    let claims = jwt_payload(&token);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );

    let r = gate
        .get("/aud", &[("cookie", &format!("tapgate_session={token}"))])
        .await;
    assert_eq!(r.status, 200);
    let jwt = gate
        .upstream
        .one("/aud")
        .header("x-tapgate-assertion")
        .unwrap()
        .to_owned();
    let a = jwt_payload(&jwt);
    assert_eq!(a["aud"], "https://api.example.com");
    assert_eq!(a["iss"], gate.origin.as_str());
    assert_eq!(a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap(), 300);
}
