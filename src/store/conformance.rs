//! The conformance suite every `Store` backend must pass. Written against
//! the trait only, so PostgreSQL runs exactly the same assertions.

use super::*;
use crate::model::{CredentialId, Email, Role, Subject};

pub(crate) fn user(subject: &str, email: &str) -> UserRecord {
    UserRecord {
        subject: Subject(subject.into()),
        email: Email::parse(email).unwrap(),
        display_name: email.into(),
        roles: vec![
            Role::parse("admin").unwrap(),
            Role::parse("member").unwrap(),
        ],
        disabled: false,
        created: 100,
    }
}

pub(crate) fn credential(id: &[u8], subject: &str) -> CredentialRecord {
    CredentialRecord {
        id: CredentialId(id.to_vec()),
        subject: Subject(subject.into()),
        public_key: vec![1, 2, 3],
        alg: -7,
        sign_count: 0,
        aaguid: "00000000-0000-0000-0000-000000000000".into(),
        transports: vec!["internal".into(), "hybrid".into()],
        backup_eligible: true,
        backup_state: false,
        attestation_fmt: "none".into(),
        attested: false,
        nickname: "laptop".into(),
        created: 100,
        last_used: None,
        revoked: None,
        attestation_root: None,
    }
}

pub(crate) fn invite(hash: &str, email: &str, expires: u64) -> InviteRecord {
    InviteRecord::new(
        hash.into(),
        Email::parse(email).unwrap(),
        vec![Role::parse("member").unwrap()],
        100,
        expires,
        "cli",
    )
}

fn recovery(hash: &str, user: &UserRecord, revoke_others: bool, expires: u64) -> InviteRecord {
    let mut i = InviteRecord::new(
        hash.into(),
        user.email.clone(),
        user.roles.clone(),
        100,
        expires,
        "cli",
    );
    i.subject = Some(user.subject.clone());
    i.revoke_other_keys = revoke_others;
    i
}

fn event(id: &str, n: u64) -> AuditEntry {
    AuditEntry {
        seq: 0,
        id: id.into(),
        time_ms: 1_700_000_000_000 + n,
        instance: "local-abc".into(),
        event: "login".into(),
        outcome: if n.is_multiple_of(2) {
            "success"
        } else {
            "failure"
        }
        .into(),
        subject: (!n.is_multiple_of(3)).then(|| format!("u_{n}")),
        record: format!(r#"{{"event":"login","n":{n},"note":"é «quoted» \"x\""}}"#),
    }
}

/// The audit record: batches numbered gap-free after the newest event,
/// retried events not stored twice, concurrent writers interleaved without
/// gaps or duplicates, every column kept.
pub async fn audit(store: &dyn Store) {
    assert!(store.audit_since(0, 10).await.unwrap().is_empty());
    let first: Vec<_> = (1..=3).map(|n| event(&format!("p.1.{n}"), n)).collect();
    store.append_audit(&first).await.unwrap();
    store.append_audit(&[]).await.unwrap();
    let stored = store.audit_since(0, 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    for (i, (s, e)) in stored.iter().zip(&first).enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(
            AuditEntry {
                seq: 0,
                ..s.clone()
            },
            *e,
            "every column kept"
        );
    }
    // A batch retried after its commit went unacknowledged, with new events.
    let retry = vec![event("p.1.3", 3), event("p.1.4", 4), event("p.1.5", 5)];
    store.append_audit(&retry).await.unwrap();
    let stored = store.audit_since(0, 10).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|e| (e.seq, e.id.as_str())).collect();
    assert_eq!(
        ids,
        [
            (1, "p.1.1"),
            (2, "p.1.2"),
            (3, "p.1.3"),
            (4, "p.1.4"),
            (5, "p.1.5")
        ]
    );
    // Paging.
    let page = store.audit_since(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    // Writers of several instances at once.
    let writer = |w: usize| async move {
        for b in 0..10 {
            let batch: Vec<_> = (0..5).map(|k| event(&format!("w{w}.{b}.{k}"), k)).collect();
            store.append_audit(&batch).await.unwrap();
        }
    };
    tokio::join!(writer(0), writer(1), writer(2), writer(3));
    let all = store.audit_since(0, 1_000).await.unwrap();
    assert_eq!(all.len(), 5 + 4 * 10 * 5);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gap-free");
    }
    let unique: std::collections::HashSet<_> = all.iter().map(|e| &e.id).collect();
    assert_eq!(unique.len(), all.len());
    // Each writer's batches keep their inner order.
    for w in 0..4 {
        let mine: Vec<_> = all
            .iter()
            .filter(|e| e.id.starts_with(&format!("w{w}.")))
            .map(|e| e.id.clone())
            .collect();
        let expected: Vec<_> = (0..10)
            .flat_map(|b| (0..5).map(move |k| format!("w{w}.{b}.{k}")))
            .collect();
        assert_eq!(mine, expected);
    }
}

fn role(r: &str) -> Role {
    Role::parse(r).unwrap()
}

fn cid(id: &[u8]) -> CredentialId {
    CredentialId(id.to_vec())
}

pub async fn run(store: &dyn Store) {
    store.ping().await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 0);

    // Invites: visible while unused and unexpired.
    store
        .create_invite(&invite("h1", "ann@example.com", 1_000))
        .await
        .unwrap();
    store
        .create_invite(&invite("h2", "bob@example.com", 150))
        .await
        .unwrap();
    assert_eq!(
        store
            .invite("h1", 200)
            .await
            .unwrap()
            .unwrap()
            .email
            .as_str(),
        "ann@example.com"
    );
    assert!(
        store.invite("h2", 200).await.unwrap().is_none(),
        "expired invite"
    );
    assert!(store.invite("nope", 200).await.unwrap().is_none());

    // Registration is atomic and the invite single-use.
    let ann = user("u_ann", "ann@example.com");
    store
        .register_with_invite("h1", &ann, &credential(b"c1", "u_ann"), 200)
        .await
        .unwrap();
    assert!(
        store.invite("h1", 200).await.unwrap().is_none(),
        "used invite"
    );
    assert!(matches!(
        store
            .register_with_invite(
                "h1",
                &user("u_x", "x@example.com"),
                &credential(b"c9", "u_x"),
                201
            )
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    assert!(matches!(
        store
            .register_with_invite(
                "h2",
                &user("u_bob", "bob@example.com"),
                &credential(b"c2", "u_bob"),
                201
            )
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    // A failed step leaves nothing behind: the invite stays usable.
    store
        .create_invite(&invite("h3", "ann@example.com", 1_000))
        .await
        .unwrap();
    assert!(matches!(
        store
            .register_with_invite(
                "h3",
                &user("u_ann2", "ann@example.com"),
                &credential(b"c3", "u_ann2"),
                202
            )
            .await,
        Err(StoreError::EmailTaken)
    ));
    assert!(
        store.invite("h3", 203).await.unwrap().is_some(),
        "rolled back"
    );
    store
        .create_invite(&invite("h4", "cid@example.com", 1_000))
        .await
        .unwrap();
    assert!(matches!(
        store
            .register_with_invite(
                "h4",
                &user("u_cid", "cid@example.com"),
                &credential(b"c1", "u_cid"),
                202
            )
            .await,
        Err(StoreError::DuplicateCredential)
    ));
    assert!(
        store
            .user(&Subject("u_cid".into()))
            .await
            .unwrap()
            .is_none(),
        "rolled back"
    );
    assert_eq!(store.count_users().await.unwrap(), 1);

    // Lookups.
    assert_eq!(
        store.user(&Subject("u_ann".into())).await.unwrap().unwrap(),
        ann
    );
    assert_eq!(
        store
            .user_by_email(&Email::parse("ANN@example.com").unwrap())
            .await
            .unwrap()
            .unwrap(),
        ann
    );
    let c = store
        .credential(&CredentialId(b"c1".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c, credential(b"c1", "u_ann"));
    assert_eq!(store.credentials_of(&ann.subject).await.unwrap(), vec![c]);
    assert!(
        store
            .credential(&CredentialId(b"zz".to_vec()))
            .await
            .unwrap()
            .is_none()
    );

    // Use updates counter, backup state, last used.
    store
        .record_use(&CredentialId(b"c1".to_vec()), 7, true, 300)
        .await
        .unwrap();
    let c = store
        .credential(&CredentialId(b"c1".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.sign_count, c.backup_state, c.last_used),
        (7, true, Some(300))
    );
    assert!(matches!(
        store
            .record_use(&CredentialId(b"zz".to_vec()), 1, false, 300)
            .await,
        Err(StoreError::NotFound)
    ));

    // Challenges: exactly once, and expired ones are pruned.
    assert!(store.consume_challenge(b"chal", 500, 300).await.unwrap());
    assert!(!store.consume_challenge(b"chal", 500, 301).await.unwrap());
    assert!(store.consume_challenge(b"other", 500, 301).await.unwrap());
    // After expiry the record may be pruned; the ceremony state's own expiry
    // refuses the challenge long before that matters.
    assert!(store.consume_challenge(b"later", 900, 600).await.unwrap());
}

/// The credential lifecycle: listings, roles, disable, keys added, renamed
/// and revoked, invites listed, cancelled and used for recovery, and the
/// revocation feed that every one of those changes must feed. Run on a
/// fresh store.
pub async fn lifecycle(store: &dyn Store) {
    let ann = user("u_ann", "ann@example.com");
    let bob = user("u_bob", "bob@example.com");
    store
        .create_invite(&invite("ia", "ann@example.com", 1_000))
        .await
        .unwrap();
    store
        .create_invite(&invite("ib", "bob@example.com", 1_000))
        .await
        .unwrap();
    store
        .register_with_invite("ia", &ann, &credential(b"a1", "u_ann"), 200)
        .await
        .unwrap();
    store
        .register_with_invite("ib", &bob, &credential(b"b1", "u_bob"), 200)
        .await
        .unwrap();
    assert!(store.revocations_since(0, 100).await.unwrap().is_empty());

    // A new user starts at epoch 0 with one active key.
    let standing = store.standing(&ann.subject).await.unwrap().unwrap();
    assert_eq!(
        standing,
        Standing {
            disabled: false,
            epoch: 0,
            active_keys: 1
        }
    );
    assert!(
        store
            .standing(&Subject("u_nobody".into()))
            .await
            .unwrap()
            .is_none()
    );

    // Adding a key to an existing user; duplicates and strangers refused.
    let mut a2 = credential(b"a2", "u_ann");
    a2.created = 210;
    a2.backup_eligible = false;
    a2.attestation_root = Some("ab".repeat(32));
    store.add_credential(&a2).await.unwrap();
    assert!(matches!(
        store.add_credential(&credential(b"a2", "u_ann")).await,
        Err(StoreError::DuplicateCredential)
    ));
    assert!(matches!(
        store.add_credential(&credential(b"zz", "u_nobody")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.credential(&cid(b"a2")).await.unwrap().unwrap(), a2);
    assert_eq!(
        store
            .standing(&ann.subject)
            .await
            .unwrap()
            .unwrap()
            .active_keys,
        2
    );

    // Listing: everyone with their keys, ordered by email.
    let all = store.users_with_keys().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|u| u.user.email.as_str())
            .collect::<Vec<_>>(),
        ["ann@example.com", "bob@example.com"]
    );
    assert_eq!(all[0].user, ann);
    assert_eq!(
        all[0]
            .credentials
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        vec![cid(b"a1"), cid(b"a2")]
    );
    assert_eq!(all[0].active_keys(), 2);
    assert_eq!(all[1].credentials.len(), 1);
    assert_eq!(
        store.user_with_keys(&ann.subject).await.unwrap().unwrap(),
        all[0]
    );
    assert!(
        store
            .user_with_keys(&Subject("u_nobody".into()))
            .await
            .unwrap()
            .is_none()
    );

    // Rename: only one's own keys.
    store
        .rename_credential(&ann.subject, &cid(b"a2"), "backup")
        .await
        .unwrap();
    assert_eq!(
        store
            .credential(&cid(b"a2"))
            .await
            .unwrap()
            .unwrap()
            .nickname,
        "backup"
    );
    assert!(matches!(
        store
            .rename_credential(&bob.subject, &cid(b"a2"), "mine")
            .await,
        Err(StoreError::NotFound)
    ));

    // Revoke: kept and marked, fed, idempotent, never someone else's, and
    // never the last key unless asked.
    assert!(matches!(
        store
            .revoke_credential(&bob.subject, &cid(b"a1"), true, 300)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .revoke_credential(&ann.subject, &cid(b"a1"), false, 300)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_credential(&ann.subject, &cid(b"a1"), false, 301)
            .await
            .unwrap(),
        "already revoked"
    );
    let a1 = store.credential(&cid(b"a1")).await.unwrap().unwrap();
    assert_eq!(a1.revoked, Some(300));
    assert!(matches!(
        store
            .revoke_credential(&ann.subject, &cid(b"a2"), false, 302)
            .await,
        Err(StoreError::LastKey)
    ));
    assert!(
        store
            .credential(&cid(b"a2"))
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    let feed = store.revocations_since(0, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].subject, ann.subject);
    assert_eq!(feed[0].what, Revoked::Credential(cid(b"a1").digest()));
    assert_eq!(feed[0].time, 300);
    let first = feed[0].seq;

    // Roles: granting keeps sessions, taking one away ends them.
    let roles = store
        .change_roles(&bob.subject, &[role("ops")], &[], 400)
        .await
        .unwrap();
    assert_eq!(roles, vec![role("admin"), role("member"), role("ops")]);
    assert!(
        store
            .revocations_since(first, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let roles = store
        .change_roles(&bob.subject, &[], &[role("admin")], 401)
        .await
        .unwrap();
    assert_eq!(roles, vec![role("member"), role("ops")]);
    assert_eq!(
        store.user(&bob.subject).await.unwrap().unwrap().roles,
        roles
    );
    let feed = store.revocations_since(first, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].what, Revoked::SessionsBefore(1));
    assert_eq!(
        store.standing(&bob.subject).await.unwrap().unwrap().epoch,
        1
    );
    // Revoking a role the user does not have changes nothing.
    store
        .change_roles(&bob.subject, &[], &[role("admin")], 402)
        .await
        .unwrap();
    assert_eq!(store.revocations_since(first, 100).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .change_roles(&Subject("u_nobody".into()), &[role("ops")], &[], 402)
            .await,
        Err(StoreError::NotFound)
    ));

    // Disable bumps the epoch; enabling does not bring old sessions back.
    assert!(store.set_disabled(&bob.subject, true, 500).await.unwrap());
    assert!(!store.set_disabled(&bob.subject, true, 501).await.unwrap());
    let s = store.standing(&bob.subject).await.unwrap().unwrap();
    assert!(s.disabled);
    assert_eq!(s.epoch, 2);
    assert!(store.user(&bob.subject).await.unwrap().unwrap().disabled);
    assert!(store.set_disabled(&bob.subject, false, 502).await.unwrap());
    let s = store.standing(&bob.subject).await.unwrap().unwrap();
    assert!(!s.disabled);
    assert_eq!(s.epoch, 2);
    assert!(matches!(
        store
            .set_disabled(&Subject("u_nobody".into()), true, 503)
            .await,
        Err(StoreError::NotFound)
    ));

    // Sign out everywhere.
    assert_eq!(store.revoke_sessions(&bob.subject, 600).await.unwrap(), 3);
    assert!(matches!(
        store
            .revoke_sessions(&Subject("u_nobody".into()), 600)
            .await,
        Err(StoreError::NotFound)
    ));

    // The feed, paged: in order, gap-free, each entry once.
    let feed = store.revocations_since(0, 100).await.unwrap();
    assert_eq!(
        feed.iter().map(|r| r.what.clone()).collect::<Vec<_>>(),
        vec![
            Revoked::Credential(cid(b"a1").digest()),
            Revoked::SessionsBefore(1),
            Revoked::SessionsBefore(2),
            Revoked::SessionsBefore(3),
        ]
    );
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    let page = store.revocations_since(0, 2).await.unwrap();
    assert_eq!(page, feed[..2]);
    assert_eq!(
        store.revocations_since(page[1].seq, 100).await.unwrap(),
        feed[2..]
    );

    // Invites: listed newest first with their state; cancel only pending.
    let mut newer = invite("ic", "cat@example.com", 2_000);
    newer.created = 700;
    store.create_invite(&newer).await.unwrap();
    store
        .create_invite(&invite("id", "dan@example.com", 650))
        .await
        .unwrap();
    let list = store.invites().await.unwrap();
    assert_eq!(list[0].token_hash, "ic");
    let used = list.iter().find(|i| i.token_hash == "ia").unwrap();
    assert_eq!(used.used_by, Some(ann.subject.clone()));
    assert_eq!(used.state(700), "used");
    assert_eq!(
        list.iter()
            .find(|i| i.token_hash == "id")
            .unwrap()
            .state(700),
        "expired"
    );
    store.cancel_invite("ic", 701).await.unwrap();
    assert!(matches!(
        store.cancel_invite("ic", 702).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.cancel_invite("ia", 702).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.cancel_invite("id", 702).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store.invite("ic", 702).await.unwrap().is_none(),
        "cancelled"
    );
    let cancelled = store.invites().await.unwrap();
    let ic = cancelled.iter().find(|i| i.token_hash == "ic").unwrap();
    assert_eq!((ic.cancelled, ic.state(702)), (Some(701), "cancelled"));
    assert!(matches!(
        store
            .register_with_invite(
                "ic",
                &user("u_cat", "cat@example.com"),
                &credential(b"c1", "u_cat"),
                703
            )
            .await,
        Err(StoreError::InviteUnavailable)
    ));

    // Recovery: bound to its user, single use, never creates a user, and
    // revokes the other keys in the same step when asked.
    store
        .create_invite(&recovery("ra", &ann, false, 2_000))
        .await
        .unwrap();
    let found = store.invite("ra", 800).await.unwrap().unwrap();
    assert_eq!(found.subject, Some(ann.subject.clone()));
    assert!(!found.revoke_other_keys);
    assert!(matches!(
        store
            .register_with_invite(
                "ra",
                &user("u_eve", "eve@example.com"),
                &credential(b"e1", "u_eve"),
                800
            )
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    assert!(matches!(
        store
            .add_key_with_invite("ra", &credential(b"b2", "u_bob"), 800)
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    assert!(matches!(
        store
            .add_key_with_invite("ia", &credential(b"a9", "u_ann"), 800)
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    // A failed step rolls back the use of the invite.
    assert!(matches!(
        store
            .add_key_with_invite("ra", &credential(b"b1", "u_ann"), 800)
            .await,
        Err(StoreError::DuplicateCredential)
    ));
    let done = store
        .add_key_with_invite("ra", &credential(b"a3", "u_ann"), 801)
        .await
        .unwrap();
    assert_eq!(done.user, ann);
    assert!(done.revoked.is_empty());
    assert!(matches!(
        store
            .add_key_with_invite("ra", &credential(b"a4", "u_ann"), 802)
            .await,
        Err(StoreError::InviteUnavailable)
    ));
    let before = store.revocations_since(0, 100).await.unwrap().len();
    store
        .create_invite(&recovery("rb", &ann, true, 2_000))
        .await
        .unwrap();
    let done = store
        .add_key_with_invite("rb", &credential(b"a5", "u_ann"), 803)
        .await
        .unwrap();
    // Ordered by creation: a3 (created 100) before a2 (created 210).
    assert_eq!(done.revoked, vec![cid(b"a3"), cid(b"a2")]);
    let keys = store.user_with_keys(&ann.subject).await.unwrap().unwrap();
    assert_eq!(
        keys.credentials
            .iter()
            .filter(|c| c.is_active())
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        vec![cid(b"a5")]
    );
    assert_eq!(
        keys.credentials.len(),
        4,
        "revoked keys are kept (a1, a2, a3, a5)"
    );
    let feed = store.revocations_since(0, 100).await.unwrap();
    assert_eq!(
        feed[before..]
            .iter()
            .map(|r| r.what.clone())
            .collect::<Vec<_>>(),
        vec![
            Revoked::Credential(cid(b"a3").digest()),
            Revoked::Credential(cid(b"a2").digest()),
        ]
    );
    // A recovery invite for nobody cannot exist.
    assert!(matches!(
        store
            .create_invite(&recovery(
                "rx",
                &user("u_nobody", "x@example.com"),
                false,
                2_000
            ))
            .await,
        Err(StoreError::NotFound)
    ));
}

/// Export → import into the empty `b` → export again: identical. `a` must
/// be empty; it is filled by [`lifecycle`] plus the odd corners (a hardware
/// key with its attestation root, the largest counter, binary ids).
pub async fn export_import(a: &dyn Store, b: &dyn Store) {
    lifecycle(a).await;
    a.append_audit(&[event("x.1.1", 1), event("x.1.2", 2)])
        .await
        .unwrap();
    let ann = a
        .user_by_email(&Email::parse("ann@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut hw = credential(&[0, 255, 128, 7, 0], ann.subject.as_str());
    hw.attestation_fmt = "packed".into();
    hw.attested = true;
    hw.attestation_root = Some("ab".repeat(32));
    hw.transports = vec!["usb".into(), "nfc".into()];
    hw.nickname = "YubiKey «5» , comma".into();
    hw.backup_eligible = false;
    a.add_credential(&hw).await.unwrap();
    a.record_use(&hw.id, u32::MAX, false, 9_999).await.unwrap();
    a.create_invite(&invite("i_export_cancelled", "carol@example.com", 5_000))
        .await
        .unwrap();
    a.cancel_invite("i_export_cancelled", 300).await.unwrap();

    let snap = a.export().await.unwrap();
    assert!(!snap.users.is_empty() && !snap.credentials.is_empty());
    assert!(!snap.invites.is_empty() && !snap.revocations.is_empty());
    assert_eq!(snap.audit.len(), 2);
    assert!(snap.invites.iter().any(|i| i.used_at.is_some()));
    assert!(snap.invites.iter().any(|i| i.cancelled.is_some()));
    assert!(snap.credentials.iter().any(|c| c.revoked.is_some()));
    assert!(snap.credentials.iter().any(|c| c.sign_count == u32::MAX));
    // Through JSON, as the CLI moves it.
    let json = serde_json::to_string_pretty(&snap).unwrap();
    let parsed: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, snap);

    b.import(&parsed, false).await.unwrap();
    let again = b.export().await.unwrap();
    assert_eq!(serde_json::to_string_pretty(&again).unwrap(), json);
    // What the running code reads agrees too.
    assert_eq!(
        a.users_with_keys().await.unwrap(),
        b.users_with_keys().await.unwrap()
    );
    assert_eq!(a.invites().await.unwrap(), b.invites().await.unwrap());
    assert_eq!(
        a.audit_since(0, 10).await.unwrap(),
        b.audit_since(0, 10).await.unwrap()
    );
    assert_eq!(
        a.revocations_since(0, 1_000).await.unwrap(),
        b.revocations_since(0, 1_000).await.unwrap()
    );

    // The feed continues after the imported entries.
    let last = snap.revocations.last().unwrap().seq;
    b.revoke_sessions(&ann.subject, 10_000).await.unwrap();
    let next = b.revocations_since(last, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].seq > last);

    // A non-empty store is refused, and left as it was.
    let before = b.export().await.unwrap();
    match b.import(&snap, false).await {
        Err(StoreError::Other(m)) => assert!(m.contains("not empty"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(b.export().await.unwrap(), before);

    // All or nothing: a snapshot that fails half-way (a key of an unknown
    // user) changes nothing, even with replace.
    let mut broken = snap.clone();
    let mut orphan = broken.credentials[0].clone();
    orphan.id = "b3JwaGFu".into();
    orphan.subject = "u_nobody".into();
    broken.credentials.push(orphan);
    assert!(b.import(&broken, true).await.is_err());
    assert_eq!(b.export().await.unwrap(), before);

    // Replace: exactly the snapshot again (the feed keeps counting on).
    // The audit record is never replaced: the snapshot's events are
    // already there (by id), so it reads the same.
    b.import(&snap, true).await.unwrap();
    assert_eq!(b.export().await.unwrap(), snap);
    // Another store's events follow the ones already recorded.
    let mut other = snap.clone();
    other.audit = vec![event("y.1.1", 7)];
    b.import(&other, true).await.unwrap();
    let audit = b.audit_since(0, 10).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|e| (e.seq, e.id.as_str()))
            .collect::<Vec<_>>(),
        [(1, "x.1.1"), (2, "x.1.2"), (3, "y.1.1")]
    );
    b.import(&snap, true).await.unwrap();
    b.revoke_sessions(&ann.subject, 10_001).await.unwrap();
    let after = b.revocations_since(last, 10).await.unwrap();
    assert!(after[0].seq > next[0].seq, "{after:?} after {next:?}");

    // Unknown formats are refused before anything is touched.
    let mut wrong = snap.clone();
    wrong.version = 99;
    assert!(b.import(&wrong, true).await.is_err());
    // Version 1 (no audit record) is still read.
    let mut v1 = serde_json::to_value(&snap).unwrap();
    v1["version"] = 1.into();
    v1.as_object_mut().unwrap().remove("audit");
    let v1: Snapshot = serde_json::from_value(v1).unwrap();
    assert!(v1.audit.is_empty());
    b.import(&v1, true).await.unwrap();
    assert!(b.schema_version().await.unwrap() >= 3);
}
