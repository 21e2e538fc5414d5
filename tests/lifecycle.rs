//! Issue 4, "Keys for life": backup keys, self-service on the account
//! API, the admin API, recovery invites, and revocation that reaches every
//! instance within 2 seconds while session checks stay stateless.
//!
//! Real router, real ceremonies (software authenticator), one shared store
//! per test; a second instance is `TestGate::sibling()`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "/.tapgate/api/account";

fn key_path(id: &str, action: &str) -> String {
    format!("{ACCOUNT}/keys/{id}/{action}")
}

/// The base64url credential id of a key.
fn id_of(key: &SoftKey) -> String {
    base64url(&key.credential_id().expect("the key holds a credential"))
}

fn digest_of(key: &SoftKey) -> String {
    tapgate::model::CredentialId(key.credential_id().unwrap()).digest()
}

/// GET `path` with `session` until it is refused, at most `limit`;
/// returns how long the refusal took to arrive.
async fn refused_within(gate: &Gate, session: &Session, limit: Duration) -> Duration {
    refused_since(
        gate,
        session,
        Instant::now(),
        limit,
        Duration::from_millis(20),
    )
    .await
}

/// A user with two keys: (first key, backup key, session of the first,
/// session of the backup).
async fn user_with_backup(
    gate: &TestGate,
    email: &str,
    roles: &[&str],
) -> (SoftKey, SoftKey, Session, Session) {
    let (first, s1) = gate.user(email, roles).await;
    let mut backup = SoftKey::new();
    gate.add_key(&s1, &mut backup).await.ok_json();
    let mut b = backup.clone();
    let s2 = gate.login(&mut b).await;
    (first, b, s1, s2)
}

#[tokio::test]
async fn issue_4_revoking_a_key_on_one_instance_ends_its_sessions_on_another_within_2s() {
    let a = TestGate::start().await;
    let b = a.sibling().await;
    let (first, _backup, s1, s2) = user_with_backup(&a, "ann@example.com", &["member"]).await;
    // Both sessions work on B, which never saw them issued.
    assert_eq!(b.get_as("/app", &s1).await.status, 200);
    assert_eq!(b.get_as("/app", &s2).await.status, 200);

    // Revoke the first key on A, signed in with the backup.
    let revoked_at = Instant::now();
    a.post_as(&key_path(&id_of(&first), "revoke"), &json!({}), &s2)
        .await
        .ok_json();
    let took = refused_within(&b, &s1, Duration::from_secs(2)).await;
    let total = revoked_at.elapsed();
    println!(
        "revocation propagation: refused on the second instance {total:?} after the revoke request began ({took:?} after it returned)"
    );
    assert!(total < Duration::from_secs(2), "took {total:?}");
    // The backup key's session is untouched, on both instances.
    assert_eq!(b.get_as("/app", &s2).await.status, 200);
    assert_eq!(a.get_as("/app", &s2).await.status, 200);
    // A browser with the revoked session is sent to sign in.
    let r = b
        .get("/app", &[("cookie", &s1.cookie()), ("accept", "text/html")])
        .await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/.tapgate/login?rd=")
    );
    // And the revoked key cannot sign in again.
    let mut again = first.clone();
    let opts = b.login_options(&json!({})).await;
    let cred = again
        .get(&b.origin, &opts["publicKey"], &ClientData::default())
        .await;
    b.login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(401, "credential-revoked");
    // The refusal on B is an audit event naming the session's key.
    b.app.audit.capture();
    b.get_as("/app", &s1)
        .await
        .assert_error(401, "session-revoked");
    let ev = &b.audit_events("session_refused")[0];
    assert_eq!(ev.credential.as_deref(), Some(digest_of(&first).as_str()));
}

#[tokio::test]
async fn issue_4_disabling_a_user_ends_their_sessions_everywhere_and_refuses_sign_in() {
    let a = TestGate::start().await;
    let b = a.sibling().await;
    a.app.audit.capture();
    let (_admin_key, admin) = a.user("root@example.com", &["admin"]).await;
    let (mut key, session) = a.user("ann@example.com", &["member"]).await;
    let subject = session.body["subject"].as_str().unwrap().to_owned();
    assert_eq!(b.get_as("/app", &session).await.status, 200);

    let started = Instant::now();
    a.post_as(
        &format!("/.tapgate/api/admin/users/{subject}/disable"),
        &json!({}),
        &admin,
    )
    .await
    .ok_json();
    let took = refused_within(&b, &session, Duration::from_secs(2)).await;
    println!(
        "disable propagation: refused on the second instance after {:?}",
        started.elapsed()
    );
    assert!(took < Duration::from_secs(2));
    // Signing in again is refused too.
    let opts = b.login_options(&json!({})).await;
    let cred = key
        .get(&b.origin, &opts["publicKey"], &ClientData::default())
        .await;
    b.login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(403, "user-disabled");
    let ev = &a.audit_events("user_disabled")[0];
    assert_eq!(
        ev.actor.as_deref(),
        Some(admin.body["subject"].as_str().unwrap())
    );
    assert_eq!(ev.subject.as_deref(), Some(subject.as_str()));
    assert_eq!(
        ev.target.as_deref(),
        Some(format!("user {subject}").as_str())
    );

    // Enabled again: new sign-ins work; the old session stays ended.
    a.post_as(
        &format!("/.tapgate/api/admin/users/{subject}/enable"),
        &json!({}),
        &admin,
    )
    .await
    .ok_json();
    assert_eq!(a.audit_events("user_enabled").len(), 1);
    let fresh = b.login(&mut key).await;
    b.app.refresh_revocations().await.unwrap();
    assert_eq!(b.get_as("/app", &fresh).await.status, 200);
    b.get_as("/app", &session)
        .await
        .assert_error(401, "session-revoked");
    assert_eq!(jwt_payload(&fresh.token)["ep"], 1);
}

#[tokio::test]
async fn issue_4_adding_a_key_needs_a_recent_tap_and_excludes_the_existing_keys() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (first, session) = gate.user("ann@example.com", &["member"]).await;
    let claims = jwt_payload(&session.token);
    assert_eq!(
        (claims["ep"].as_u64(), claims["nk"].as_u64()),
        (Some(0), Some(1))
    );

    // A tap 6 minutes ago is not recent enough: step up first.
    let now = now_unix();
    let stale = gate.session_at(&session, now, 3600, now - 360);
    let r = gate
        .post_as("/.tapgate/api/register/options", &json!({}), &stale)
        .await;
    r.assert_error(401, "auth-too-old");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("max_age=300"),
        "{:?}",
        r.headers
    );
    // No session at all: the new-user path asks for an invite.
    gate.post("/.tapgate/api/register/options", &json!({}))
        .await
        .assert_error(400, "invite-missing");

    let opts = gate
        .post_as("/.tapgate/api/register/options", &json!({}), &session)
        .await
        .ok_json();
    let excluded: Vec<&str> = opts["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(excluded, [id_of(&first).as_str()]);
    assert_eq!(
        base64url_decode(opts["publicKey"]["user"]["id"].as_str().unwrap()).unwrap(),
        session.body["subject"].as_str().unwrap().as_bytes(),
        "the new key belongs to the same user"
    );

    let mut backup = SoftKey::new();
    let reply = gate.add_key(&session, &mut backup).await;
    let body = reply.ok_json();
    assert_eq!(body["subject"], session.body["subject"]);
    assert_eq!(body["redirect"], "/.tapgate/account");
    assert_eq!(body["key"]["nickname"], "backup");
    // The session is re-issued to count the new key, same tap time.
    let renewed = gate.session_from(&reply, &session);
    let c = jwt_payload(&renewed.token);
    assert_eq!(c["nk"], 2);
    assert_eq!(c["auth_time"], claims["auth_time"]);
    assert_eq!(c["cred"], claims["cred"]);

    // The backup key signs in as the same person.
    let s2 = gate.login(&mut backup).await;
    assert_eq!(s2.body["subject"], session.body["subject"]);
    assert_eq!(jwt_payload(&s2.token)["nk"], 2);

    // A replayed answer is refused (the challenge is single-use).
    let opts = gate
        .post_as(REGISTER_OPTIONS, &json!({}), &renewed)
        .await
        .ok_json();
    let cred = SoftKey::new()
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let verify = json!({ "credential": cred, "ceremony": opts["ceremony"] });
    gate.post_as("/.tapgate/api/register/verify", &verify, &renewed)
        .await
        .ok_json();
    gate.post_as("/.tapgate/api/register/verify", &verify, &renewed)
        .await
        .assert_error(400, "challenge-reused");
    // Nor can a key join another user's account through a ceremony begun
    // in a different session.
    let (_bk, bob) = gate.user("bob@example.com", &["member"]).await;
    let opts = gate
        .post_as(REGISTER_OPTIONS, &json!({}), &renewed)
        .await
        .ok_json();
    let cred = SoftKey::new()
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.post_as(
        "/.tapgate/api/register/verify",
        &json!({ "credential": cred, "ceremony": opts["ceremony"] }),
        &bob,
    )
    .await
    .assert_error(400, "ceremony-invalid");
    let _ = first;

    let added: Vec<_> = gate
        .audit_events("key_added")
        .into_iter()
        .filter(|e| e.outcome == Some(tapgate::audit::Outcome::Success))
        .collect();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0].actor, added[0].subject);
    assert_eq!(added[0].detail.as_deref(), Some("account"));
    assert_eq!(
        added[0].credential.as_deref(),
        Some(digest_of(&backup).as_str())
    );
    assert_eq!(added[0].outcome, Some(tapgate::audit::Outcome::Success));
}

#[tokio::test]
async fn issue_4_the_account_lists_renames_and_revokes_keys_and_guards_the_last_one() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (first, backup, s1, s2) = user_with_backup(&gate, "ann@example.com", &["member"]).await;
    let (bob_key, bob) = gate.user("bob@example.com", &["member"]).await;

    let me = gate.get_as(ACCOUNT, &s1).await.ok_json();
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["active_keys"], 2);
    assert_eq!(me["fresh"], true);
    let keys = me["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    // (Both keys were added in the same second: find them by id.)
    let by_id = |me: &Value, key: &SoftKey| -> Value {
        me["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id_of(key).as_str())
            .cloned()
            .expect("the key is listed")
    };
    let k0 = &by_id(&me, &first);
    assert_eq!(k0["current"], true);
    assert_eq!(by_id(&me, &backup)["current"], false);
    assert_eq!(k0["aaguid"], AAGUID_TEXT);
    // Not in the shipped list of authenticator models: no name, the AAGUID
    // shows instead.
    assert_eq!(k0["authenticator"], Value::Null);
    for field in [
        "created",
        "last_used",
        "synced",
        "backed_up",
        "kind",
        "transports",
    ] {
        assert!(!k0[field].is_null(), "{field} missing: {k0}");
    }

    // Rename: own keys only, and a name is needed.
    gate.post_as(
        &key_path(&id_of(&first), "rename"),
        &json!({ "nickname": "  Work laptop \u{7} " }),
        &s1,
    )
    .await
    .ok_json();
    let me = gate.get_as(ACCOUNT, &s1).await.ok_json();
    assert_eq!(by_id(&me, &first)["nickname"], "Work laptop");
    gate.post_as(
        &key_path(&id_of(&bob_key), "rename"),
        &json!({ "nickname": "mine" }),
        &s1,
    )
    .await
    .assert_error(404, "key-not-found");
    gate.post_as(
        &key_path(&id_of(&first), "rename"),
        &json!({ "nickname": " " }),
        &s1,
    )
    .await
    .assert_error(400, "nickname-invalid");
    assert_eq!(
        gate.audit_events("key_renamed")[0].credential.as_deref(),
        Some(digest_of(&first).as_str())
    );

    // Revoke someone else's key: no such key here.
    gate.post_as(&key_path(&id_of(&bob_key), "revoke"), &json!({}), &s1)
        .await
        .assert_error(404, "key-not-found");
    // Revoking needs a recent tap too.
    let now = now_unix();
    let stale = gate.session_at(&s2, now, 3600, now - 600);
    gate.post_as(&key_path(&id_of(&first), "revoke"), &json!({}), &stale)
        .await
        .assert_error(401, "auth-too-old");

    // Revoke the other key: this session lives on, re-issued with nk = 1.
    let r = gate
        .post_as(&key_path(&id_of(&first), "revoke"), &json!({}), &s2)
        .await;
    assert_eq!(r.ok_json()["signed_out"], false);
    let s2 = gate.session_from(&r, &s2);
    assert_eq!(jwt_payload(&s2.token)["nk"], 1);
    let me = gate.get_as(ACCOUNT, &s2).await.ok_json();
    assert_eq!(me["active_keys"], 1);
    assert_eq!(
        me["keys"].as_array().unwrap().len(),
        2,
        "revoked keys stay listed"
    );
    assert!(by_id(&me, &first)["revoked"].is_u64(), "{me}");
    assert_eq!(
        me["keys"][1]["id"],
        id_of(&first).as_str(),
        "revoked keys last"
    );
    let ev = &gate.audit_events("key_revoked")[0];
    assert_eq!(ev.actor, ev.subject);
    assert_eq!(ev.credential.as_deref(), Some(digest_of(&first).as_str()));

    // The last key: refused without the explicit confirmation.
    let r = gate
        .post_as(&key_path(&id_of(&backup), "revoke"), &json!({}), &s2)
        .await;
    let v = r.assert_error(409, "last-key");
    assert!(
        v["message"].as_str().unwrap().contains("administrator"),
        "the warning says only an administrator can recover: {v}"
    );
    // Confirmed: revoked, and since this session was made with it, signed out.
    let r = gate
        .post_as(
            &key_path(&id_of(&backup), "revoke"),
            &json!({ "confirm_last_key": true }),
            &s2,
        )
        .await;
    assert_eq!(r.ok_json()["signed_out"], true);
    assert_eq!(r.cookie(&gate.cookie_name).as_deref(), Some(""));
    gate.app.refresh_revocations().await.unwrap();
    gate.get_as(ACCOUNT, &s2)
        .await
        .assert_error(401, "session-revoked");
    // Bob was never affected.
    assert_eq!(gate.get_as("/app", &bob).await.status, 200);
}

#[tokio::test]
async fn issue_4_sign_out_everywhere_ends_every_session_of_the_user() {
    let a = TestGate::start().await;
    let b = a.sibling().await;
    let (_first, _backup, s1, s2) = user_with_backup(&a, "ann@example.com", &["member"]).await;
    let r = a
        .post_as("/.tapgate/api/account/sessions/revoke", &json!({}), &s1)
        .await;
    assert_eq!(r.ok_json()["signed_out"], true);
    assert_eq!(r.cookie(&a.cookie_name).as_deref(), Some(""));
    refused_within(&b, &s1, Duration::from_secs(2)).await;
    refused_within(&b, &s2, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn issue_4_a_recovery_invite_adds_a_key_to_the_same_identity_and_may_revoke_the_others() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (_root_key, root) = gate.user("root@example.com", &["admin"]).await;
    let (mut lost, session) = gate.user("ann@example.com", &["member", "ops"]).await;
    let subject = session.body["subject"].as_str().unwrap().to_owned();

    let made = gate
        .post_as(
            "/.tapgate/api/admin/invites",
            &json!({ "recover": "ann@example.com", "revoke_other_keys": true, "ttl": "1h" }),
            &root,
        )
        .await
        .ok_json();
    assert_eq!(made["recovery_for"], subject.as_str());
    assert!(
        made["qr"]
            .as_str()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,")
    );
    let token = invite_token(made["url"].as_str().unwrap());

    // The register page learns it is a recovery, for whom.
    let opts = gate.register_options(&token).await;
    assert_eq!(opts["invite"]["recovery"], true);
    assert_eq!(opts["invite"]["email"], "ann@example.com");
    assert_eq!(opts["invite"]["revoke_other_keys"], true);
    assert_eq!(
        base64url_decode(opts["publicKey"]["user"]["id"].as_str().unwrap()).unwrap(),
        subject.as_bytes()
    );
    let mut fresh = SoftKey::new();
    let cred = fresh
        .create(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    let reply = gate
        .register_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await;
    let body = reply.ok_json();
    assert_eq!(body["subject"], subject.as_str(), "same identity");
    assert_eq!(body["revoked"].as_array().unwrap().len(), 1);
    let recovered = gate.session_from(&reply, &session);
    let claims = jwt_payload(&recovered.token);
    assert_eq!(claims["roles"], json!(["member", "ops"]), "roles kept");
    assert_eq!(claims["nk"], 1);

    // Single use.
    gate.post(REGISTER_OPTIONS, &json!({ "invite": token }))
        .await
        .assert_error(400, "invite-invalid");
    // The lost key is revoked, and its session with it.
    let opts = gate.login_options(&json!({})).await;
    let cred = lost
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(401, "credential-revoked");
    gate.app.refresh_revocations().await.unwrap();
    gate.get_as("/app", &session)
        .await
        .assert_error(401, "session-revoked");
    assert_eq!(gate.get_as("/app", &recovered).await.status, 200);
    let login = gate.login(&mut fresh).await;
    assert_eq!(login.body["subject"], subject.as_str());

    // Audited: who made the invite, and what the recovery did.
    let made_ev = &gate.audit_events("recovery_invite_created")[0];
    assert_eq!(made_ev.actor.as_deref(), root.body["subject"].as_str());
    assert_eq!(made_ev.subject.as_deref(), Some(subject.as_str()));
    let added = &gate.audit_events("key_added")[0];
    assert_eq!(added.detail.as_deref(), Some("recovery-invite"));
    assert_eq!(added.subject.as_deref(), Some(subject.as_str()));
    let revoked = &gate.audit_events("key_revoked")[0];
    assert_eq!(
        revoked.credential.as_deref(),
        Some(digest_of(&lost).as_str())
    );
}

const REGISTER_OPTIONS: &str = "/.tapgate/api/register/options";

#[tokio::test]
async fn issue_4_a_device_link_adds_a_key_from_another_device() {
    let gate = TestGate::start().await;
    let (_laptop, session) = gate.user("ann@example.com", &["member"]).await;
    let link = gate
        .post_as("/.tapgate/api/account/device-link", &json!({}), &session)
        .await
        .ok_json();
    assert!(
        link["qr"]
            .as_str()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,")
    );
    let expires = link["expires"].as_u64().unwrap();
    assert!(expires <= now_unix() + 15 * 60 && expires > now_unix() + 14 * 60);
    // The phone, not signed in, scans it.
    let mut phone = SoftKey::new();
    let s = gate
        .register(&mut phone, &invite_token(link["url"].as_str().unwrap()))
        .await;
    assert_eq!(s.body["subject"], session.body["subject"]);
    let me = gate.get_as(ACCOUNT, &s).await.ok_json();
    assert_eq!(me["active_keys"], 2);
    // A stale session cannot make one.
    let now = now_unix();
    gate.post_as(
        "/.tapgate/api/account/device-link",
        &json!({}),
        &gate.session_at(&session, now, 3600, now - 301),
    )
    .await
    .assert_error(401, "auth-too-old");
}

#[tokio::test]
async fn issue_4_the_admin_api_needs_the_admin_role_a_session_and_our_origin() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (_k, member) = gate.user("ann@example.com", &["member"]).await;
    let (_k2, root) = gate.user("root@example.com", &["admin"]).await;
    gate.get("/.tapgate/api/admin/users", &[])
        .await
        .assert_error(401, "user-unauthenticated");
    gate.get_as("/.tapgate/api/admin/users", &member)
        .await
        .assert_error(403, "admin-role-missing");
    gate.post_as(
        "/.tapgate/api/admin/invites",
        &json!({ "email": "x@example.com" }),
        &member,
    )
    .await
    .assert_error(403, "admin-role-missing");
    assert_eq!(gate.audit_events("admin_denied").len(), 2);
    // A write from another site is refused before it reaches the handler.
    gate.send(
        gate.http
            .post(gate.url("/.tapgate/api/admin/invites"))
            .header("origin", "https://evil.example")
            .header("cookie", root.cookie())
            .header("content-type", "application/json")
            .body(json!({ "email": "x@example.com" }).to_string()),
    )
    .await
    .assert_error(403, "cross-origin-request");
    assert!(
        gate.app
            .store
            .invites()
            .await
            .unwrap()
            .iter()
            .all(|i| i.email.as_str() != "x@example.com")
    );
    // The page itself is served to anyone; its data is not.
    let page = gate
        .get("/.tapgate/admin", &[("accept", "text/html")])
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );

    let users = gate
        .get_as("/.tapgate/api/admin/users", &root)
        .await
        .ok_json();
    let list = users["users"].as_array().unwrap();
    assert_eq!(
        list.iter()
            .map(|u| u["email"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ann@example.com", "root@example.com"]
    );
    assert_eq!(list[0]["keys"].as_array().unwrap().len(), 1);
    assert_eq!(list[0]["active_keys"], 1);
    assert_eq!(users["me"], root.body["subject"]);

    // An admin whose role was taken away in the store is refused at once:
    // by the admin API's own look at the store (403), or by the revocation
    // the change wrote, which this instance applies as soon as its store
    // signals it (401).
    let subject = tapgate::model::Subject(root.body["subject"].as_str().unwrap().into());
    gate.app
        .store
        .change_roles(
            &subject,
            &[],
            &[tapgate::model::Role("admin".into())],
            now_unix(),
        )
        .await
        .unwrap();
    let r = gate.get_as("/.tapgate/api/admin/users", &root).await;
    if r.status == 401 {
        r.assert_error(401, "session-revoked");
    } else {
        r.assert_error(403, "admin-role-missing");
    }
}

#[tokio::test]
async fn issue_4_admins_grant_and_revoke_roles_revoke_keys_and_end_sessions() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (_rk, root) = gate.user("root@example.com", &["admin"]).await;
    let (first, mut backup, s1, s2) = user_with_backup(&gate, "ann@example.com", &["member"]).await;
    let subject = s1.body["subject"].as_str().unwrap().to_owned();
    let user_path = |tail: &str| format!("/.tapgate/api/admin/users/{subject}/{tail}");

    // Granting a role: sessions continue (the role comes with the next sign-in).
    let r = gate
        .post_as(&user_path("roles"), &json!({ "grant": "ops" }), &root)
        .await
        .ok_json();
    assert_eq!(r["roles"], json!(["member", "ops"]));
    gate.app.refresh_revocations().await.unwrap();
    assert_eq!(gate.get_as("/app", &s1).await.status, 200);
    let ev = &gate.audit_events("role_granted")[0];
    assert_eq!(ev.detail.as_deref(), Some("role ops"));
    assert_eq!(ev.actor.as_deref(), root.body["subject"].as_str());
    // Taking one away ends them (they carry the roles).
    gate.post_as(&user_path("roles"), &json!({ "revoke": "member" }), &root)
        .await
        .ok_json();
    gate.app.refresh_revocations().await.unwrap();
    gate.get_as("/app", &s1)
        .await
        .assert_error(401, "session-revoked");
    assert_eq!(gate.audit_events("role_revoked").len(), 1);
    let s3 = gate.login(&mut backup).await;
    assert_eq!(jwt_payload(&s3.token)["roles"], json!(["ops"]));
    gate.post_as(&user_path("roles"), &json!({ "grant": "Bad Role" }), &root)
        .await
        .assert_error(400, "role-invalid");
    gate.post_as(&user_path("roles"), &json!({}), &root)
        .await
        .assert_error(400, "invalid-request");
    // No locking oneself out from the page.
    let me = root.body["subject"].as_str().unwrap();
    gate.post_as(
        &format!("/.tapgate/api/admin/users/{me}/roles"),
        &json!({ "revoke": "admin" }),
        &root,
    )
    .await
    .assert_error(409, "admin-self-lockout");
    gate.post_as(
        &format!("/.tapgate/api/admin/users/{me}/disable"),
        &json!({}),
        &root,
    )
    .await
    .assert_error(409, "admin-self-lockout");

    // Revoke one key: its sessions end, the other key's do not.
    let s1b = gate.login(&mut first.clone()).await;
    gate.post_as(
        &format!("/.tapgate/api/admin/keys/{}/revoke", id_of(&first)),
        &json!({}),
        &root,
    )
    .await
    .ok_json();
    gate.app.refresh_revocations().await.unwrap();
    gate.get_as("/app", &s1b)
        .await
        .assert_error(401, "session-revoked");
    assert_eq!(gate.get_as("/app", &s3).await.status, 200);
    let ev = &gate.audit_events("key_revoked")[0];
    assert_eq!(ev.actor.as_deref(), root.body["subject"].as_str());
    assert_eq!(
        ev.target.as_deref(),
        Some(format!("key {}", digest_of(&first)).as_str())
    );
    // The last key needs confirmation here too.
    let last = format!("/.tapgate/api/admin/keys/{}/revoke", id_of(&backup));
    gate.post_as(&last, &json!({}), &root)
        .await
        .assert_error(409, "last-key");

    // Revoke all sessions.
    let r = gate
        .post_as(&user_path("sessions/revoke"), &json!({}), &root)
        .await
        .ok_json();
    assert!(r["epoch"].as_u64().unwrap() >= 2);
    gate.app.refresh_revocations().await.unwrap();
    gate.get_as("/app", &s3)
        .await
        .assert_error(401, "session-revoked");
    let _ = s2;
    assert_eq!(gate.audit_events("sessions_revoked").len(), 1);
    gate.post_as(
        "/.tapgate/api/admin/users/u_nobody/disable",
        &json!({}),
        &root,
    )
    .await
    .assert_error(404, "user-not-found");
}

#[tokio::test]
async fn issue_4_admins_create_list_and_cancel_invites_with_a_qr_code() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let (_rk, root) = gate.user("root@example.com", &["admin"]).await;
    let made = gate
        .post_as(
            "/.tapgate/api/admin/invites",
            &json!({ "email": "New@Example.com", "roles": ["member", "ops"], "ttl": "2h" }),
            &root,
        )
        .await
        .ok_json();
    assert_eq!(made["email"], "new@example.com");
    let url = made["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/.tapgate/register?invite=", gate.origin)));
    let qr = made["qr"].as_str().unwrap();
    assert!(qr.starts_with("data:image/svg+xml;base64,"), "{qr}");
    let expires = made["expires"].as_u64().unwrap();
    assert!(expires > now_unix() + 7000 && expires <= now_unix() + 7200);
    // The token is in the URL only; the list has its hash.
    let list = gate
        .get_as("/.tapgate/api/admin/invites", &root)
        .await
        .ok_json();
    let found = list["invites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == made["id"])
        .unwrap()
        .clone();
    assert_eq!(found["state"], "pending");
    assert_eq!(found["roles"], json!(["member", "ops"]));
    assert_eq!(found["created_by"], root.body["subject"]);
    assert!(!list.to_string().contains(&invite_token(url)));

    // Cancel by a prefix of the id: the link stops working.
    let short = &made["id"].as_str().unwrap()[..10];
    gate.post_as(
        &format!("/.tapgate/api/admin/invites/{short}/cancel"),
        &json!({}),
        &root,
    )
    .await
    .ok_json();
    gate.post(REGISTER_OPTIONS, &json!({ "invite": invite_token(url) }))
        .await
        .assert_error(400, "invite-invalid");
    gate.post_as(
        &format!("/.tapgate/api/admin/invites/{short}/cancel"),
        &json!({}),
        &root,
    )
    .await
    .assert_error(409, "invite-not-pending");
    let list = gate
        .get_as("/.tapgate/api/admin/invites", &root)
        .await
        .ok_json();
    assert!(
        list["invites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["state"] == "cancelled")
    );
    assert_eq!(gate.audit_events("invite_created").len(), 1);
    let ev = &gate.audit_events("invite_cancelled")[0];
    assert_eq!(ev.actor.as_deref(), root.body["subject"].as_str());
    assert_eq!(ev.email.as_deref(), Some("new@example.com"));

    // Bad requests.
    for (body, code) in [
        (json!({ "email": "root@example.com" }), "user-exists"),
        (json!({ "email": "nope" }), "email-invalid"),
        (
            json!({ "email": "a@example.com", "ttl": "1s" }),
            "ttl-invalid",
        ),
        (
            json!({ "email": "a@example.com", "recover": "root@example.com" }),
            "invalid-request",
        ),
    ] {
        let status = if code == "user-exists" { 409 } else { 400 };
        gate.post_as("/.tapgate/api/admin/invites", &body, &root)
            .await
            .assert_error(status, code);
    }
}

#[tokio::test]
async fn issue_4_a_cloned_key_is_refused_and_audited_with_its_digest() {
    let gate = TestGate::start().await;
    gate.app.audit.capture();
    let invite = gate.invite("ann@example.com", &["member"]).await;
    let mut key = SoftKey::with_counter();
    gate.register(&mut key, &invite).await;
    let mut clone = key.clone();
    gate.login(&mut key).await;
    let opts = gate.login_options(&json!({})).await;
    let cred = clone
        .get(&gate.origin, &opts["publicKey"], &ClientData::default())
        .await;
    gate.login_verify(&cred, opts["ceremony"].as_str().unwrap())
        .await
        .assert_error(400, "sign-count-regressed");
    let failed: Vec<_> = gate
        .audit_events("login")
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("sign-count-regressed"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].credential.as_deref(),
        Some(digest_of(&key).as_str())
    );
    assert_eq!(failed[0].outcome, Some(tapgate::audit::Outcome::Failure));
    assert!(failed[0].subject.is_some());
}
