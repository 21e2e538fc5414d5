//! The conformance suite every `Store` backend must pass. Written against
//! the trait only, so PostgreSQL runs exactly the same assertions.

use super::*;
use crate::model::{CredentialId, Email, Role, Subject};

fn user(subject: &str, email: &str) -> UserRecord {
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

fn credential(id: &[u8], subject: &str) -> CredentialRecord {
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
    }
}

fn invite(hash: &str, email: &str, expires: u64) -> InviteRecord {
    InviteRecord {
        token_hash: hash.into(),
        email: Email::parse(email).unwrap(),
        roles: vec![Role::parse("member").unwrap()],
        created: 100,
        expires,
        created_by: "cli".into(),
        used_at: None,
    }
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
