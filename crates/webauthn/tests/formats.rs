//! android-key and apple statements made at test time (rcgen certificates for the credential
//! key), one per rule of §8.4 and §8.8, so each refusal is shown with its reason. The real
//! vectors (tests/vectors.rs) show the accepting side on device output.

mod common;

use std::time::SystemTime;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use ciborium::Value;
use common::utc;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use tapgate_webauthn::{
    AttestationKind, Error, RegistrationResponseJson, RelyingParty, TrustStore, UserVerification,
    base64url, verify_registration,
};

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://example.com";
const CHALLENGE: &[u8] = b"formats-test-challenge-0123456789";

fn now() -> SystemTime {
    utc(2030, 6, 1, 0, 0)
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn test_ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "formats test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2050, 1, 1);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate for `key` issued by `ca`, with one extra extension.
fn leaf_for(key: &KeyPair, ca: &Ca, ext_oid: &[u64], ext: Vec<u8>) -> rcgen::Certificate {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "formats test credential");
    p.is_ca = IsCa::ExplicitNoCa;
    p.not_before = date_time_ymd(2021, 1, 1);
    p.not_after = date_time_ymd(2045, 1, 1);
    p.custom_extensions
        .push(CustomExtension::from_oid_content(ext_oid, ext));
    p.signed_by(key, &ca.cert, &ca.key).unwrap()
}

/// The credential: a P-256 key as a COSE_Key, and what the ceremony signs over.
struct Ceremony {
    key: KeyPair,
    auth_data: Vec<u8>,
    client_data: Vec<u8>,
    cred_id: Vec<u8>,
}

impl Ceremony {
    fn new() -> Ceremony {
        let key = KeyPair::generate().unwrap();
        let point = key.public_key_raw().to_vec();
        assert_eq!(point.len(), 65);
        let cose_key = cbor(&Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(-7)),
            (int(-1), int(1)),
            (int(-2), Value::Bytes(point[1..33].to_vec())),
            (int(-3), Value::Bytes(point[33..65].to_vec())),
        ]));
        let cred_id = b"formats-test-credential".to_vec();
        let mut auth_data = digest::digest(&digest::SHA256, RP_ID.as_bytes())
            .as_ref()
            .to_vec();
        auth_data.push(0x45); // UP, UV, AT
        auth_data.extend(0u32.to_be_bytes());
        auth_data.extend([0u8; 16]);
        auth_data.extend((cred_id.len() as u16).to_be_bytes());
        auth_data.extend(&cred_id);
        auth_data.extend(&cose_key);
        let client_data = format!(
            r#"{{"type":"webauthn.create","challenge":"{}","origin":"{ORIGIN}"}}"#,
            base64url(CHALLENGE)
        )
        .into_bytes();
        Ceremony {
            key,
            auth_data,
            client_data,
            cred_id,
        }
    }

    fn client_data_hash(&self) -> Vec<u8> {
        digest::digest(&digest::SHA256, &self.client_data)
            .as_ref()
            .to_vec()
    }

    fn signed(&self) -> Vec<u8> {
        [self.auth_data.clone(), self.client_data_hash()].concat()
    }

    fn sign_with(&self, key: &KeyPair) -> Vec<u8> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der())
            .unwrap();
        pair.sign(&SystemRandom::new(), &self.signed())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn response(&self, fmt: &str, att_stmt: Vec<(Value, Value)>) -> RegistrationResponseJson {
        let att_obj = cbor(&Value::Map(vec![
            (text("fmt"), text(fmt)),
            (text("attStmt"), Value::Map(att_stmt)),
            (text("authData"), Value::Bytes(self.auth_data.clone())),
        ]));
        serde_json::from_value(serde_json::json!({
            "id": base64url(&self.cred_id),
            "rawId": base64url(&self.cred_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": base64url(&self.client_data),
                "attestationObject": base64url(&att_obj),
            },
        }))
        .unwrap()
    }
}

fn verify(resp: &RegistrationResponseJson) -> Result<AttestationKind, Error> {
    let rp = RelyingParty {
        id: RP_ID.into(),
        origins: vec![ORIGIN.into()],
        user_verification: UserVerification::Preferred,
    };
    verify_registration(&rp, CHALLENGE, resp, now()).map(|r| r.attestation)
}

fn chain(certs: &[&rcgen::Certificate]) -> Value {
    Value::Array(
        certs
            .iter()
            .map(|c| Value::Bytes(c.der().to_vec()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// android-key

const ANDROID_KEY_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 1, 17];

fn der(tag: &[u8], body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    [tag, &[body.len() as u8], body].concat()
}

/// [tag] EXPLICIT around `inner`, low or high tag number form.
fn explicit(tag: u32, inner: &[u8]) -> Vec<u8> {
    let id = if tag < 31 {
        vec![0xa0 | tag as u8]
    } else {
        vec![0xbf, 0x80 | (tag >> 7) as u8, (tag & 0x7f) as u8]
    };
    der(&id, inner)
}

#[derive(Clone)]
struct Auths {
    purpose: Option<Vec<u8>>,
    origin: Option<u8>,
    all_applications: bool,
}

impl Auths {
    fn good() -> Auths {
        Auths {
            purpose: Some(vec![2]),
            origin: Some(0),
            all_applications: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(p) = &self.purpose {
            let ints: Vec<u8> = p.iter().flat_map(|v| der(&[0x02], &[*v])).collect();
            body.extend(explicit(1, &der(&[0x31], &ints)));
        }
        if self.all_applications {
            body.extend(explicit(600, &[0x05, 0x00]));
        }
        if let Some(o) = self.origin {
            body.extend(explicit(702, &der(&[0x02], &[o])));
        }
        der(&[0x30], &body)
    }
}

fn key_description(challenge: &[u8], sw: &Auths, tee: &Auths) -> Vec<u8> {
    let body = [
        der(&[0x02], &[0x04]),
        der(&[0x0a], &[0x01]),
        der(&[0x02], &[0x29]),
        der(&[0x0a], &[0x01]),
        der(&[0x04], challenge),
        der(&[0x04], &[]),
        sw.encode(),
        tee.encode(),
    ]
    .concat();
    der(&[0x30], &body)
}

fn android(
    c: &Ceremony,
    ca: &Ca,
    cert_key: &KeyPair,
    challenge: &[u8],
    sw: &Auths,
    tee: &Auths,
) -> RegistrationResponseJson {
    let leaf = leaf_for(
        cert_key,
        ca,
        ANDROID_KEY_OID,
        key_description(challenge, sw, tee),
    );
    c.response(
        "android-key",
        vec![
            (text("alg"), int(-7)),
            (text("sig"), Value::Bytes(c.sign_with(cert_key))),
            (text("x5c"), chain(&[&leaf, &ca.cert])),
        ],
    )
}

#[test]
fn android_key_rules() {
    let ca = test_ca();
    let c = Ceremony::new();
    let cdh = c.client_data_hash();
    let (good, none) = (
        Auths::good(),
        Auths {
            purpose: None,
            origin: None,
            all_applications: false,
        },
    );

    let ok = verify(&android(&c, &ca, &c.key, &cdh, &none, &good)).unwrap();
    let AttestationKind::Basic { x5c } = ok else {
        panic!("{ok:?}")
    };
    let mut store = TrustStore::empty();
    store.add_pem("Test CA", &ca.cert.pem()).unwrap();
    assert_eq!(store.verify(&x5c, now()).unwrap().root_name, "Test CA");

    let refuse = |resp: RegistrationResponseJson, reason: &str, says: &str| {
        let e = verify(&resp).unwrap_err();
        assert_eq!(e.reason(), reason, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    };
    // attestationChallenge must be the clientDataHash.
    refuse(
        android(&c, &ca, &c.key, &[0u8; 32], &none, &good),
        "attestation-nonce-mismatch",
        "another registration",
    );
    // allApplications in either list.
    for (sw, tee) in [
        (
            Auths {
                all_applications: true,
                ..none.clone()
            },
            good.clone(),
        ),
        (
            none.clone(),
            Auths {
                all_applications: true,
                ..good.clone()
            },
        ),
    ] {
        refuse(
            android(&c, &ca, &c.key, &cdh, &sw, &tee),
            "attestation-certificate-invalid",
            "allApplications",
        );
    }
    // An imported key (KM_ORIGIN_IMPORTED = 2), in either list.
    refuse(
        android(
            &c,
            &ca,
            &c.key,
            &cdh,
            &Auths {
                origin: Some(2),
                ..none.clone()
            },
            &good,
        ),
        "attestation-certificate-invalid",
        "imported",
    );
    // A key that may also decrypt (KM_PURPOSE_DECRYPT = 1) or only encrypt.
    for purpose in [vec![2, 1], vec![0]] {
        refuse(
            android(
                &c,
                &ca,
                &c.key,
                &cdh,
                &none,
                &Auths {
                    purpose: Some(purpose),
                    ..good.clone()
                },
            ),
            "attestation-certificate-invalid",
            "other purposes",
        );
    }
    // The certificate is for another key (which also made the signature).
    let other = KeyPair::generate().unwrap();
    refuse(
        android(&c, &ca, &other, &cdh, &none, &good),
        "attestation-public-key-mismatch",
        "another key",
    );
    // A signature by another key than the certificate's.
    let leaf = leaf_for(
        &c.key,
        &ca,
        ANDROID_KEY_OID,
        key_description(&cdh, &none, &good),
    );
    let resp = c.response(
        "android-key",
        vec![
            (text("alg"), int(-7)),
            (text("sig"), Value::Bytes(c.sign_with(&other))),
            (text("x5c"), chain(&[&leaf])),
        ],
    );
    refuse(resp, "attestation-signature-invalid", "android-key");
    // No key attestation extension at all.
    let plain = leaf_for(&c.key, &ca, &[1, 2, 3, 4], vec![0x05, 0x00]);
    let resp = c.response(
        "android-key",
        vec![
            (text("alg"), int(-7)),
            (text("sig"), Value::Bytes(c.sign_with(&c.key))),
            (text("x5c"), chain(&[&plain])),
        ],
    );
    refuse(
        resp,
        "attestation-certificate-invalid",
        "no Android key attestation",
    );
}

// ---------------------------------------------------------------------------------------------
// apple

const APPLE_NONCE_OID: &[u64] = &[1, 2, 840, 113635, 100, 8, 2];

fn apple_ext(nonce: &[u8]) -> Vec<u8> {
    der(&[0x30], &explicit(1, &der(&[0x04], nonce)))
}

#[test]
fn apple_rules() {
    let ca = test_ca();
    let c = Ceremony::new();
    let nonce = digest::digest(&digest::SHA256, &c.signed())
        .as_ref()
        .to_vec();
    let good = leaf_for(&c.key, &ca, APPLE_NONCE_OID, apple_ext(&nonce));
    let stmt = |leaf: &rcgen::Certificate, extra: Vec<(Value, Value)>| {
        let mut s = vec![(text("x5c"), chain(&[leaf, &ca.cert]))];
        s.extend(extra);
        c.response("apple", s)
    };

    let AttestationKind::Basic { x5c } = verify(&stmt(&good, vec![])).unwrap() else {
        panic!()
    };
    let mut store = TrustStore::empty();
    store.add_pem("Test CA", &ca.cert.pem()).unwrap();
    assert!(store.verify(&x5c, now()).is_ok());
    // Apple's real root does not vouch for a certificate anyone can make.
    assert_eq!(
        TrustStore::builtin()
            .verify(&x5c, now())
            .unwrap_err()
            .reason(),
        "attestation-untrusted"
    );
    // The credential's own alg may accompany x5c.
    assert!(verify(&stmt(&good, vec![(text("alg"), int(-7))])).is_ok());

    let refuse = |resp: RegistrationResponseJson, reason: &str| {
        let e = verify(&resp).unwrap_err();
        assert_eq!(e.reason(), reason, "{e}");
    };
    let wrong_nonce = leaf_for(&c.key, &ca, APPLE_NONCE_OID, apple_ext(&[9u8; 32]));
    refuse(stmt(&wrong_nonce, vec![]), "attestation-nonce-mismatch");
    let other_key = leaf_for(
        &KeyPair::generate().unwrap(),
        &ca,
        APPLE_NONCE_OID,
        apple_ext(&nonce),
    );
    refuse(stmt(&other_key, vec![]), "attestation-public-key-mismatch");
    let no_ext = leaf_for(&c.key, &ca, &[1, 2, 3, 4], vec![0x05, 0x00]);
    refuse(stmt(&no_ext, vec![]), "attestation-certificate-invalid");
    let garbled = leaf_for(&c.key, &ca, APPLE_NONCE_OID, vec![0x04, 0x00]);
    refuse(stmt(&garbled, vec![]), "attestation-certificate-invalid");
    refuse(
        stmt(&good, vec![(text("alg"), int(-257))]),
        "attestation-algorithm-mismatch",
    );
    refuse(
        stmt(&good, vec![(text("sig"), Value::Bytes(vec![1]))]),
        "attestation-statement-malformed",
    );
    refuse(
        c.response("apple", vec![]),
        "attestation-statement-malformed",
    );
}
