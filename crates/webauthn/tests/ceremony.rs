//! The ceremony rules tapgate adds or insists on, each shown on a real vector: what a
//! registration returns, embedding, backup eligibility, counters, ids, certificate time.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{Case, Kind, load_all, run};
use tapgate_webauthn::{
    AttestationKind, Error, RegistrationResponseJson, RelyingParty, StoredCredential,
    UserVerification, base64url, verify_authentication, verify_registration,
};

fn case(file_part: &str, name: &str) -> Case {
    load_all()
        .cases
        .into_iter()
        .find(|c| c.file.contains(file_part) && c.name == name)
        .unwrap_or_else(|| panic!("no case {file_part} / {name}"))
}

fn rp(c: &Case) -> RelyingParty {
    RelyingParty {
        id: c.rp_ids[0].clone(),
        origins: c.origins.clone(),
        user_verification: c.uv,
    }
}

fn registration(c: &Case) -> &RegistrationResponseJson {
    match &c.kind {
        Kind::Registration(r) => r,
        Kind::Authentication { .. } => panic!("not a registration"),
    }
}

#[test]
fn registration_reports_what_was_proved() {
    let none = case("w3c-webauthn", "none-es256/registration");
    let reg =
        verify_registration(&rp(&none), &none.challenge, registration(&none), none.now).unwrap();
    assert_eq!(reg.fmt, "none");
    assert_eq!(reg.attestation, AttestationKind::None);
    assert_eq!(reg.alg, -7);
    assert_eq!(reg.sign_count, 0);
    assert_eq!(base64url(&reg.credential_id), registration(&none).raw_id);
    assert_eq!(
        reg.aaguid.to_vec(),
        vec![
            0x84, 0x46, 0xcc, 0xb9, 0xab, 0x1d, 0xb3, 0x74, 0x75, 0x0b, 0x23, 0x67, 0xff, 0x6f,
            0x3a, 0x1f
        ]
    );
    assert!(reg.flags.up && reg.flags.be && reg.flags.bs && !reg.flags.uv);

    let selfatt = case("w3c-webauthn", "packed-self-es256/registration");
    let reg = verify_registration(
        &rp(&selfatt),
        &selfatt.challenge,
        registration(&selfatt),
        selfatt.now,
    )
    .unwrap();
    assert_eq!(reg.attestation, AttestationKind::SelfAttestation);

    for (name, alg) in [
        ("packed-es256/registration", -7),
        ("packed-es512/registration", -36),
        ("packed-rs256/registration", -257),
        ("packed-eddsa/registration", -8),
    ] {
        let c = case("w3c-webauthn", name);
        let reg = verify_registration(&rp(&c), &c.challenge, registration(&c), c.now).unwrap();
        assert_eq!(reg.alg, alg, "{name}");
        assert!(
            matches!(&reg.attestation, AttestationKind::Basic { x5c } if x5c.len() == 1),
            "{name}"
        );
    }

    let u2f = case("w3c-webauthn", "fido-u2f-es256/registration");
    let reg = verify_registration(&rp(&u2f), &u2f.challenge, registration(&u2f), u2f.now).unwrap();
    assert_eq!(reg.fmt, "fido-u2f");
    assert!(matches!(reg.attestation, AttestationKind::Basic { .. }));

    let chromium = case("chromium", "reg");
    let reg = verify_registration(
        &rp(&chromium),
        &chromium.challenge,
        registration(&chromium),
        chromium.now,
    )
    .unwrap();
    assert_eq!(reg.transports, vec!["internal".to_string()]);
    assert!(reg.flags.uv);
}

#[test]
fn the_registered_key_signs_in() {
    let c = case("chromium", "reg");
    let reg = verify_registration(&rp(&c), &c.challenge, registration(&c), c.now).unwrap();
    let auth = case("chromium", "auth");
    let Kind::Authentication { response, .. } = &auth.kind else {
        panic!()
    };
    let stored = StoredCredential {
        id: &reg.credential_id,
        public_key: &reg.public_key,
        sign_count: reg.sign_count,
        backup_eligible: reg.flags.be,
    };
    let a =
        verify_authentication(&rp(&auth), &auth.challenge, response, &stored, auth.now).unwrap();
    assert_eq!(a.sign_count, 2);
    assert_eq!(a.user_handle.as_deref(), Some(&b"user-1"[..]));
    assert!(a.flags.uv);

    // Replaying the same assertion: the counter no longer grows.
    let stored = StoredCredential {
        sign_count: a.sign_count,
        ..stored
    };
    let e = verify_authentication(&rp(&auth), &auth.challenge, response, &stored, auth.now)
        .unwrap_err();
    assert_eq!(
        e,
        Error::SignCountRegressed {
            credential_id: reg.credential_id.clone(),
            stored: 2,
            found: 2
        }
    );
    assert_eq!(e.reason(), "sign-count-regressed");

    // Another credential's row.
    let stored = StoredCredential {
        id: b"someone else",
        sign_count: 0,
        ..stored
    };
    let e = verify_authentication(&rp(&auth), &auth.challenge, response, &stored, auth.now)
        .unwrap_err();
    assert_eq!(e.reason(), "credential-not-allowed");
}

#[test]
fn backup_eligibility_may_not_change() {
    let c = case("w3c-webauthn", "packed-es256/authentication");
    let Kind::Authentication {
        response,
        stored_id,
        public_key,
        sign_count,
        backup_eligible,
    } = &c.kind
    else {
        panic!()
    };
    assert!(*backup_eligible);
    let stored = StoredCredential {
        id: stored_id,
        public_key,
        sign_count: *sign_count,
        backup_eligible: false,
    };
    let e = verify_authentication(&rp(&c), &c.challenge, response, &stored, c.now).unwrap_err();
    assert_eq!(e.reason(), "backup-eligibility-changed");
}

#[test]
fn embedding_is_refused_at_both_ceremonies() {
    for name in [
        "none-es256-crossOrigin/registration",
        "none-es256-crossOrigin/authentication",
        "none-es256-topOrigin/registration",
        "none-es256-topOrigin/authentication",
    ] {
        let c = case("w3c-webauthn", name);
        let want = if name.contains("top") {
            "top-origin-refused"
        } else {
            "cross-origin-refused"
        };
        assert_eq!(run(&c).unwrap_err().reason(), want, "{name}");
    }
}

#[test]
fn ids_and_type_are_checked() {
    let c = case("w3c-webauthn", "none-es256/registration");
    let mut r = registration(&c).clone();
    r.r#type = "password".into();
    let e = verify_registration(&rp(&c), &c.challenge, &r, c.now).unwrap_err();
    assert_eq!(e.reason(), "credential-type-invalid");

    let mut r = registration(&c).clone();
    r.id = base64url(b"other");
    assert_eq!(
        verify_registration(&rp(&c), &c.challenge, &r, c.now)
            .unwrap_err()
            .reason(),
        "credential-id-raw-id-mismatch"
    );

    // id and rawId agree with each other but not with the authenticator's credential id.
    let mut r = registration(&c).clone();
    r.id = base64url(b"other");
    r.raw_id = r.id.clone();
    assert_eq!(
        verify_registration(&rp(&c), &c.challenge, &r, c.now)
            .unwrap_err()
            .reason(),
        "credential-id-mismatch"
    );

    // A padded id names the same bytes and is accepted.
    let mut r = registration(&c).clone();
    while !r.id.len().is_multiple_of(4) {
        r.id.push('=');
    }
    verify_registration(&rp(&c), &c.challenge, &r, c.now).unwrap();
}

#[test]
fn attestation_certificate_must_be_valid_now() {
    let c = case("w3c-webauthn", "packed-es256/registration");
    // The W3C attestation certificates are valid from 2024-01-01.
    let before = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let e = verify_registration(&rp(&c), &c.challenge, registration(&c), before).unwrap_err();
    assert_eq!(e.reason(), "attestation-certificate-expired");
}

#[test]
fn aaguid_extension_must_match() {
    let bad: Vec<Case> = load_all()
        .cases
        .into_iter()
        .filter(|c| {
            c.name.contains("id-fido-gen-ce-aaguid")
                && c.name.contains("does not match")
                && !c.unsupported
        })
        .collect();
    assert!(!bad.is_empty());
    for c in bad {
        assert_eq!(
            run(&c).unwrap_err().reason(),
            "attestation-aaguid-mismatch",
            "{}",
            c.name
        );
    }
}

#[test]
fn upstream_expected_errors_have_precise_reasons() {
    for (file, name, reason) in [
        (
            "py_webauthn",
            "TestVerifyAuthenticationResponse.test_raises_exception_on_incorrect_public_key",
            "signature-invalid",
        ),
        (
            "py_webauthn",
            "TestVerifyAuthenticationResponse.test_raises_exception_on_uv_required_but_false",
            "user-not-verified",
        ),
        (
            "py_webauthn",
            "TestVerifyRegistrationResponse.test_raises_useful_error_on_bad_attestation_object",
            "attestation-object-malformed",
        ),
        (
            "w3c-webauthn",
            "packed-ed448/registration",
            "algorithm-unsupported",
        ),
        (
            "simplewebauthn",
            "should skip CTS check when enforcement option is false",
            "attestation-format-unsupported",
        ),
        (
            "w3c-webauthn",
            "none-es256/authentication-uv-required",
            "user-not-verified",
        ),
        ("chromium", "authBogusSig", "signature-invalid"),
    ] {
        let c = case(file, name);
        assert_eq!(run(&c).unwrap_err().reason(), reason, "{name}");
    }
    // The W3C vectors whose UV bit is clear are refused under Required, by design.
    let refused_uv = load_all()
        .cases
        .into_iter()
        .filter(|c| c.file.starts_with("w3c-webauthn") && c.uv == UserVerification::Required)
        .filter(|c| run(c).is_err_and(|e| e.reason() == "user-not-verified"))
        .count();
    assert!(refused_uv >= 5, "{refused_uv}");
}

#[test]
fn new_formats_bind_the_authenticator_data() {
    // A changed signCount inside authenticatorData: tpm and apple notice through the hash they
    // carry (extraData, nonce), android-key through the credential's signature.
    for (file, name, reason) in [
        (
            "py_webauthn",
            "TestVerifyRegistrationResponseTPM.test_verify_tpm_with_ecc_public_area_type",
            "attestation-nonce-mismatch",
        ),
        (
            "py_webauthn",
            "TestVerifyRegistrationResponseApple.test_verify_attestation_apple_passkey",
            "attestation-nonce-mismatch",
        ),
        (
            "py_webauthn",
            "TestVerifyRegistrationResponseAndroidKey.test_verify_attestation_android_key_hardware_authority",
            "attestation-signature-invalid",
        ),
    ] {
        let c = case(file, name);
        assert!(run(&c).is_ok(), "{name}");
        let mut reg = registration(&c).clone();
        let mut att = tapgate_webauthn::base64url_decode(&reg.response.attestation_object).unwrap();
        let p = common::peek_attestation(&att).unwrap();
        let at = att
            .windows(p.auth_data.len())
            .position(|w| w == p.auth_data.as_slice())
            .unwrap();
        att[at + 36] ^= 0x01;
        reg.response.attestation_object = base64url(&att);
        let e = verify_registration(&rp(&c), &c.challenge, &reg, c.now).unwrap_err();
        assert_eq!(e.reason(), reason, "{name}: {e}");
    }
}
