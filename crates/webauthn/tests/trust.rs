//! Attestation trust: the shipped roots and AAGUID names, real device chains against them, and
//! certificate chains made at test time with rcgen (test CA -> intermediate -> packed
//! attestation leaf) for every way a chain can be refused.

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use ciborium::Value;
use common::{Case, Kind, load_all, utc};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use tapgate_webauthn::{
    AttestationKind, Error, RegistrationResponseJson, RelyingParty, TrustStore, UserVerification,
    authenticator_name, base64url, verify_registration,
};
use x509_cert::Certificate;
use x509_cert::der::Decode as _;

// ---------------------------------------------------------------------------------------------
// Shipped data

/// Every shipped root: the name it is added under, its subject, and its SHA-256 fingerprint
/// (those published by the vendor or a source that states it; see data/README.md).
const SHIPPED: [(&str, &str, &str); 9] = [
    (
        "Yubico U2F Root CA Serial 457200631",
        "CN=Yubico U2F Root CA Serial 457200631",
        "0fa1386f80eb8713263ae5c1d84deb455bdf08aea50ab05503cefee82b092d42",
    ),
    (
        "Yubico FIDO Root CA Serial 450203556",
        "CN=Yubico FIDO Root CA Serial 450203556",
        "35f1a54b353bfb711e6d42adbeb76c0e9dead095018e6a94783ba2192fd6faad",
    ),
    (
        "Yubico Attestation Root 1",
        "CN=Yubico Attestation Root 1",
        "62760c6a6ef91679f454c8902b80fd009825b3f25da90f1fbace2ec6586cd5a8",
    ),
    (
        "Apple WebAuthn Root CA",
        "ST=California,O=Apple Inc.,CN=Apple WebAuthn Root CA",
        "0915dd5c07a28db549d1f677bb5a75d4bfbe9561a773424327762e9e02f9bb29",
    ),
    (
        "Google Hardware Attestation Root",
        "SERIALNUMBER=f92009e853b6b045",
        "c1984a3ef45c1e2a918551de10603c86f7051b2249c4891cae3230eabd0c97d5",
    ),
    (
        "Google Hardware Attestation Root",
        "SERIALNUMBER=f92009e853b6b045",
        "1ef1a04b8ba58ab94589ac498c8982a783f24ea7307e0159a0c3a73b377d87cc",
    ),
    (
        "Google Hardware Attestation Root",
        "SERIALNUMBER=f92009e853b6b045",
        "ab6641178a36e179aa0c1cdddf9a16eb45fa20943e2b8cd7c7c05c26cf8b487a",
    ),
    (
        "Google Hardware Attestation Root",
        "SERIALNUMBER=f92009e853b6b045",
        "cedb1cb6dc896ae5ec797348bce9286753c2b38ee71ce0fbe34a9a1248800dfc",
    ),
    (
        "Microsoft TPM Root Certificate Authority 2014",
        "CN=Microsoft TPM Root Certificate Authority 2014,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US",
        "870c7a35ceab3d59979f2c6a524042d404cb71518004350925fb2ced79a999da",
    ),
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        })
        .collect()
}

#[test]
fn shipped_roots_parse_with_the_expected_subjects_and_fingerprints() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/roots");
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        for der in pem_ders(&std::fs::read_to_string(&path).unwrap()) {
            let cert = Certificate::from_der(&der).unwrap();
            let subject = cert.tbs_certificate.subject.to_string();
            let fp = hex(digest::digest(&digest::SHA256, &der).as_ref());
            // Self-signed roots: subject and issuer are the same name.
            assert_eq!(
                cert.tbs_certificate.issuer, cert.tbs_certificate.subject,
                "{subject}"
            );
            found.push((subject, fp));
        }
    }
    let mut expected: Vec<(String, String)> = SHIPPED
        .iter()
        .map(|(_, s, f)| (s.to_string(), f.replace(' ', "")))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);

    let store = TrustStore::builtin();
    assert_eq!(store.len(), SHIPPED.len());
    assert_eq!(
        store.root_names(),
        vec![
            "Yubico U2F Root CA Serial 457200631",
            "Yubico FIDO Root CA Serial 450203556",
            "Yubico Attestation Root 1",
            "Apple WebAuthn Root CA",
            "Google Hardware Attestation Root",
            "Microsoft TPM Root Certificate Authority 2014",
        ]
    );
}

fn aaguid(s: &str) -> [u8; 16] {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn common_authenticators_have_names() {
    for (id, name) in [
        ("cb69481e-8ff7-4039-93ec-0a2729a154a8", "YubiKey 5 Series"),
        ("ee882879-721c-4913-9775-3dfcce97072a", "YubiKey 5 Series"),
        (
            "fa2b99dc-9e39-4257-8f92-4a30d23c4118",
            "YubiKey 5 Series with NFC",
        ),
        (
            "2fc0579f-8113-47ea-b116-bb5a8db9202a",
            "YubiKey 5 Series with NFC",
        ),
        (
            "c5ef55ff-ad9a-4b9f-b580-adebafe026d0",
            "YubiKey 5 Series with Lightning",
        ),
        (
            "73bb0cd4-e502-49b8-9c6f-b59445bf720b",
            "YubiKey 5 FIPS Series",
        ),
        (
            "d8522d9f-575b-4866-88a9-ba99fa02f35b",
            "YubiKey Bio Series - FIDO Edition",
        ),
        (
            "f8a011f3-8c0a-4d15-8006-17111f9edc7d",
            "Security Key by Yubico",
        ),
        (
            "a4e9fc6d-4cbe-4758-b8ba-37598bb5bbaa",
            "Security Key NFC by Yubico",
        ),
        (
            "42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3",
            "Google Titan Security Key v2",
        ),
        (
            "833b721a-ff5f-4d00-bb2e-bdda3ec01e29",
            "Feitian ePass FIDO2 Authenticator",
        ),
        (
            "8876631b-d4a0-427f-5773-0ec71c9e0279",
            "Solo Secp256R1 FIDO2 CTAP2 Authenticator",
        ),
        ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
        ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "Apple Passwords"),
        (
            "dd4ec289-e01d-41c9-bb89-70fa845d4bf2",
            "iCloud Keychain (Managed)",
        ),
        (
            "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
            "Google Password Manager",
        ),
        ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
        ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
        ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ] {
        assert_eq!(authenticator_name(&aaguid(id)), Some(name), "{id}");
    }
    let list = include_str!("../data/aaguids.tsv");
    let entries: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(entries.len() > 300, "{}", entries.len());
    let mut ids = std::collections::BTreeSet::new();
    for line in entries {
        let (id, name) = line.split_once('\t').unwrap();
        assert_eq!(id.len(), 36, "{line}");
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(!name.trim().is_empty() && !name.contains('\t'), "{line}");
        assert!(ids.insert(id), "duplicate {id}");
        assert_eq!(authenticator_name(&aaguid(id)), Some(name));
    }
}

// ---------------------------------------------------------------------------------------------
// Real device chains

/// Registers a vector's response under the first of its RP ids that accepts it.
fn register(c: &Case) -> Option<tapgate_webauthn::Registration> {
    let Kind::Registration(r) = &c.kind else {
        return None;
    };
    c.rp_ids.iter().find_map(|id| {
        let rp = RelyingParty {
            id: id.clone(),
            origins: c.origins.clone(),
            user_verification: c.uv,
        };
        verify_registration(&rp, &c.challenge, r, c.now).ok()
    })
}

/// Every accepted registration vector whose attestation carries a chain: the root it verifies
/// to at the vector's validation time, or the reason it does not.
fn chain_verdicts(store: &TrustStore) -> BTreeMap<String, Result<String, String>> {
    let mut out = BTreeMap::new();
    for c in load_all().cases {
        let Some(reg) = register(&c) else {
            continue;
        };
        let AttestationKind::Basic { x5c } = reg.attestation else {
            continue;
        };
        let verdict = store
            .verify(&x5c, c.now)
            .map(|p| p.root_name)
            .map_err(|e| e.reason().to_string());
        out.insert(format!("{} / {} [{}]", c.file, c.name, reg.fmt), verdict);
    }
    out
}

#[test]
fn real_device_chains_verify_against_the_shipped_roots() {
    let verdicts = chain_verdicts(&TrustStore::builtin());
    let yubico = "Yubico U2F Root CA Serial 457200631";
    let tpm = "Microsoft TPM Root Certificate Authority 2014";
    let expected: BTreeMap<&str, &str> = [
        ("TestVerifyRegistrationResponse.test_raises_when_root_cert_invalid_for_response", yubico),
        ("TestVerifyRegistrationResponseFIDOU2F.test_verify_attestation_from_yubikey_firefox", yubico),
        ("TestVerifyRegistrationResponseFIDOU2F.test_verify_attestation_with_unsupported_token_binding", yubico),
        ("TestVerifyRegistrationResponseFIDOU2F.test_verify_attestation_with_unsupported_token_binding_status", yubico),
        ("TestVerifyRegistrationResponsePacked.test_verify_attestation_from_yubikey_firefox", yubico),
        ("TestVerifyRegistrationResponsePacked.test_verify_attestation_with_okp_public_key", yubico),
        ("should verify FIDO U2F attestation", yubico),
        ("should verify Packed (X5C) attestation (id repaired)", yubico),
        ("TestVerifyRegistrationResponseTPM.test_verify_attestation_surface_pro_4 (base64url)", tpm),
        ("TestVerifyRegistrationResponseTPM.test_verify_attestation_dell_xps_13 (base64url)", tpm),
        ("TestVerifyRegistrationResponseTPM.test_verify_attestation_lenovo_carbon_x1 (base64url)", tpm),
        ("TestVerifyRegistrationResponseTPM.test_verify_tpm_with_ecc_public_area_type", tpm),
        ("should verify TPM response with spec-compliant tcgAtTpm SAN structure", tpm),
        ("should verify TPM response with non-spec-compliant tcgAtTpm SAN structure", tpm),
        ("should verify TPM response with ECC public area type", tpm),
        ("TestVerifyRegistrationResponseApple.test_verify_attestation_apple_passkey", "Apple WebAuthn Root CA"),
        ("should verify Apple attestation", "Apple WebAuthn Root CA"),
        (
            "TestVerifyRegistrationResponseAndroidKey.test_verify_attestation_android_key_hardware_authority",
            "Google Hardware Attestation Root",
        ),
        (
            "should verify Android Keystore response from a Pixel 8a in January 2025",
            "Google Hardware Attestation Root",
        ),
    ]
    .into_iter()
    .collect();
    let mut chained = 0;
    for (key, verdict) in &verdicts {
        let name = key
            .split(" / ")
            .nth(1)
            .unwrap()
            .rsplit_once(" [")
            .unwrap()
            .0;
        match (expected.get(name), verdict) {
            (Some(root), Ok(got)) => {
                assert_eq!(root, got, "{key}");
                chained += 1;
            }
            (Some(root), Err(e)) => panic!("{key}: expected to chain to {root}, got {e}"),
            // Test CAs (W3C, FIDO conformance, SimpleWebAuthn's own) are not shipped roots.
            (None, Err(e)) => assert_eq!(e, "attestation-untrusted", "{key}"),
            (None, Ok(root)) => panic!("{key}: unexpectedly chains to {root}"),
        }
        println!("{key}: {verdict:?}");
    }
    assert_eq!(
        chained,
        expected.len(),
        "some expected vectors did not verify at all"
    );
}

#[test]
fn issue_3_py_webauthn_root_cert_invalid_is_refused_by_other_roots() {
    // Upstream passes its own roots (GlobalSign R2) for packed and expects a refusal: the
    // Yubico leaf does not chain to them. The same with a store lacking Yubico's root.
    let c = load_all()
        .cases
        .into_iter()
        .find(|c| {
            c.name
                .ends_with("test_raises_when_root_cert_invalid_for_response")
        })
        .unwrap();
    let reg = register(&c).unwrap();
    let AttestationKind::Basic { x5c } = reg.attestation else {
        panic!()
    };
    let mut other = TrustStore::empty();
    other
        .add_pem(
            "Apple WebAuthn Root CA",
            include_str!("../data/roots/apple-webauthn-root-ca.pem"),
        )
        .unwrap();
    let e = other.verify(&x5c, c.now).unwrap_err();
    assert_eq!(e.reason(), "attestation-untrusted");
    assert!(
        e.to_string()
            .contains("Yubico U2F Root CA Serial 457200631"),
        "{e}"
    );
    assert_eq!(
        TrustStore::empty()
            .verify(&x5c, c.now)
            .unwrap_err()
            .reason(),
        "attestation-untrusted"
    );
}

#[test]
fn real_chains_expire() {
    // The Pixel 8a chain's TEE intermediate expired on 2025-02-02.
    let c = load_all()
        .cases
        .into_iter()
        .find(|c| {
            c.name == "should verify Android Keystore response from a Pixel 8a in January 2025"
        })
        .unwrap();
    let reg = register(&c).unwrap();
    let AttestationKind::Basic { x5c } = reg.attestation else {
        panic!()
    };
    let store = TrustStore::builtin();
    assert!(store.verify(&x5c, c.now).is_ok());
    let e = store.verify(&x5c, utc(2025, 3, 1, 0, 0)).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-expired", "{e}");
    let e = store.verify(&x5c, utc(2019, 1, 1, 0, 0)).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-expired", "{e}");
}

// ---------------------------------------------------------------------------------------------
// Chains made at test time

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://example.com";
const CHALLENGE: &[u8] = b"trust-test-challenge-0123456789";
const AAGUID: [u8; 16] = [
    0x74, 0x61, 0x70, 0x67, 0x61, 0x74, 0x65, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x2d, 0x6b, 0x65, 0x79,
];

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn dn(cn: &str, ou: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CountryName, "SE");
    d.push(DnType::OrganizationName, "tapgate test");
    if let Some(ou) = ou {
        d.push(DnType::OrganizationalUnitName, ou);
    }
    d.push(DnType::CommonName, cn);
    d
}

fn ca_params(cn: &str, is_ca: IsCa, years: (i32, i32)) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, None);
    p.is_ca = is_ca;
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(years.0, 1, 1);
    p.not_after = date_time_ymd(years.1, 1, 1);
    p
}

fn root(cn: &str, is_ca: IsCa) -> Issued {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn, is_ca, (2020, 2060))
        .self_signed(&key)
        .unwrap();
    Issued { cert, key }
}

fn issue(params: CertificateParams, by: &Issued) -> Issued {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &by.cert, &by.key).unwrap();
    Issued { cert, key }
}

fn leaf_params(years: (i32, i32)) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(
        "tapgate test authenticator",
        Some("Authenticator Attestation"),
    );
    p.is_ca = IsCa::ExplicitNoCa;
    p.not_before = date_time_ymd(years.0, 1, 1);
    p.not_after = date_time_ymd(years.1, 1, 1);
    // id-fido-gen-ce-aaguid: OCTET STRING of the AAGUID.
    let mut content = vec![0x04, 16];
    content.extend(AAGUID);
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
        content,
    ));
    p
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

/// A packed registration signed by `leaf`, carrying `chain` (leaf first) as x5c.
fn packed_registration(leaf: &Issued, chain: &[&rcgen::Certificate]) -> RegistrationResponseJson {
    let rng = SystemRandom::new();
    let cred = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    use aws_lc_rs::signature::KeyPair as _;
    let point = cred.public_key().as_ref().to_vec();
    let int = |i: i64| Value::Integer(i.into());
    let cose_key = cbor(&Value::Map(vec![
        (int(1), int(2)),
        (int(3), int(-7)),
        (int(-1), int(1)),
        (int(-2), Value::Bytes(point[1..33].to_vec())),
        (int(-3), Value::Bytes(point[33..65].to_vec())),
    ]));
    let cred_id = b"tapgate-trust-test-credential".to_vec();
    let mut auth_data = digest::digest(&digest::SHA256, RP_ID.as_bytes())
        .as_ref()
        .to_vec();
    auth_data.push(0x41); // UP, AT
    auth_data.extend(0u32.to_be_bytes());
    auth_data.extend(AAGUID);
    auth_data.extend((cred_id.len() as u16).to_be_bytes());
    auth_data.extend(&cred_id);
    auth_data.extend(&cose_key);
    let client_data = format!(
        r#"{{"type":"webauthn.create","challenge":"{}","origin":"{ORIGIN}","crossOrigin":false}}"#,
        base64url(CHALLENGE)
    );
    let signed = [
        auth_data.as_slice(),
        digest::digest(&digest::SHA256, client_data.as_bytes()).as_ref(),
    ]
    .concat();
    let leaf_signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &leaf.key.serialize_der())
            .unwrap();
    let sig = leaf_signer.sign(&rng, &signed).unwrap();
    let t = |s: &str| Value::Text(s.into());
    let att_obj = cbor(&Value::Map(vec![
        (t("fmt"), t("packed")),
        (
            t("attStmt"),
            Value::Map(vec![
                (t("alg"), int(-7)),
                (t("sig"), Value::Bytes(sig.as_ref().to_vec())),
                (
                    t("x5c"),
                    Value::Array(
                        chain
                            .iter()
                            .map(|c| Value::Bytes(c.der().to_vec()))
                            .collect(),
                    ),
                ),
            ]),
        ),
        (t("authData"), Value::Bytes(auth_data)),
    ]));
    serde_json::from_value(serde_json::json!({
        "id": base64url(&cred_id),
        "rawId": base64url(&cred_id),
        "type": "public-key",
        "response": {
            "clientDataJSON": base64url(client_data.as_bytes()),
            "attestationObject": base64url(&att_obj),
        },
        "clientExtensionResults": {},
    }))
    .unwrap()
}

fn relying_party() -> RelyingParty {
    RelyingParty {
        id: RP_ID.into(),
        origins: vec![ORIGIN.into()],
        user_verification: UserVerification::Discouraged,
    }
}

/// Registers with the packed response and returns its x5c.
fn registered_x5c(resp: &RegistrationResponseJson, now: SystemTime) -> Vec<Vec<u8>> {
    let reg = verify_registration(&relying_party(), CHALLENGE, resp, now).unwrap();
    assert_eq!(reg.fmt, "packed");
    match reg.attestation {
        AttestationKind::Basic { x5c } => x5c,
        other => panic!("{other:?}"),
    }
}

fn store_with(name: &str, ca: &Issued) -> TrustStore {
    let mut s = TrustStore::empty();
    assert_eq!(s.add_pem(name, &ca.cert.pem()).unwrap(), 1);
    s
}

fn now() -> SystemTime {
    utc(2030, 6, 1, 0, 0)
}

#[test]
fn test_ca_intermediate_leaf_chain() {
    let ca = root(
        "tapgate test root",
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    let int = issue(
        ca_params(
            "tapgate test intermediate",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            (2021, 2040),
        ),
        &ca,
    );
    let leaf = issue(leaf_params((2022, 2045)), &int);
    let resp = packed_registration(&leaf, &[&leaf.cert, &int.cert]);
    let x5c = registered_x5c(&resp, now());

    // Verifies with the CA in the store, and says which root it reached.
    let store = store_with("Test CA", &ca);
    let path = store.verify(&x5c, now()).unwrap();
    assert_eq!(path.root_name, "Test CA");
    assert_eq!(
        path.root_fingerprint,
        hex(digest::digest(&digest::SHA256, ca.cert.der()).as_ref())
    );
    // A copy of the root at the end of x5c changes nothing; order does not matter.
    let mut with_root = x5c.clone();
    with_root.push(ca.cert.der().to_vec());
    assert_eq!(store.verify(&with_root, now()).unwrap(), path);
    let shuffled = vec![x5c[0].clone(), ca.cert.der().to_vec(), x5c[1].clone()];
    assert_eq!(store.verify(&shuffled, now()).unwrap(), path);

    // Refused with an empty store, with the shipped roots, and without the intermediate.
    for (s, chain) in [
        (TrustStore::empty(), &x5c),
        (TrustStore::builtin(), &x5c),
        (store.clone(), &vec![x5c[0].clone()]),
    ] {
        let e = s.verify(chain, now()).unwrap_err();
        assert_eq!(e.reason(), "attestation-untrusted", "{e}");
    }

    // Refused when any certificate on the path (root included) is not valid at `now`.
    for t in [
        utc(2019, 6, 1, 0, 0),
        utc(2021, 6, 1, 0, 0),
        utc(2042, 6, 1, 0, 0),
        utc(2061, 1, 1, 0, 0),
    ] {
        let e = store.verify(&x5c, t).unwrap_err();
        assert_eq!(e.reason(), "attestation-chain-expired", "{t:?}: {e}");
    }
    // The leaf outlives its issuer here: the intermediate is the one named.
    let e = store.verify(&x5c, utc(2042, 6, 1, 0, 0)).unwrap_err();
    assert!(e.to_string().contains("tapgate test intermediate"), "{e}");
}

#[test]
fn leaf_issued_directly_by_the_root() {
    let ca = root(
        "tapgate direct root",
        IsCa::Ca(BasicConstraints::Constrained(0)),
    );
    let leaf = issue(leaf_params((2022, 2045)), &ca);
    let x5c = registered_x5c(&packed_registration(&leaf, &[&leaf.cert]), now());
    assert_eq!(
        store_with("Direct", &ca)
            .verify(&x5c, now())
            .unwrap()
            .root_name,
        "Direct"
    );
    // An operator may also trust one exact attestation certificate.
    let mut exact = TrustStore::empty();
    exact.add_pem("This key only", &leaf.cert.pem()).unwrap();
    assert_eq!(
        exact.verify(&x5c, now()).unwrap().root_name,
        "This key only"
    );
}

#[test]
fn intermediate_that_is_not_a_ca_is_refused() {
    let ca = root(
        "tapgate test root",
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    for is_ca in [IsCa::ExplicitNoCa, IsCa::NoCa] {
        let int = issue(ca_params("tapgate not a CA", is_ca, (2021, 2050)), &ca);
        let leaf = issue(leaf_params((2022, 2045)), &int);
        let x5c = registered_x5c(&packed_registration(&leaf, &[&leaf.cert, &int.cert]), now());
        let e = store_with("Test CA", &ca).verify(&x5c, now()).unwrap_err();
        assert_eq!(e.reason(), "attestation-chain-invalid", "{e}");
        assert!(e.to_string().contains("tapgate not a CA"), "{e}");
    }
}

#[test]
fn path_length_and_key_usage_are_enforced() {
    // The root allows no intermediate below it.
    let ca = root(
        "tapgate strict root",
        IsCa::Ca(BasicConstraints::Constrained(0)),
    );
    let int = issue(
        ca_params(
            "tapgate intermediate",
            IsCa::Ca(BasicConstraints::Unconstrained),
            (2021, 2050),
        ),
        &ca,
    );
    let leaf = issue(leaf_params((2022, 2045)), &int);
    let x5c = registered_x5c(&packed_registration(&leaf, &[&leaf.cert, &int.cert]), now());
    let e = store_with("Strict", &ca).verify(&x5c, now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-invalid", "{e}");
    assert!(e.to_string().contains("allows 0 intermediate"), "{e}");

    // An intermediate whose key usage leaves out keyCertSign.
    let ca = root(
        "tapgate test root",
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    let mut p = ca_params(
        "tapgate signs no certs",
        IsCa::Ca(BasicConstraints::Unconstrained),
        (2021, 2050),
    );
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let int = issue(p, &ca);
    let leaf = issue(leaf_params((2022, 2045)), &int);
    let x5c = registered_x5c(&packed_registration(&leaf, &[&leaf.cert, &int.cert]), now());
    let e = store_with("Test CA", &ca).verify(&x5c, now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-invalid", "{e}");
    assert!(
        e.to_string()
            .contains("does not allow signing certificates"),
        "{e}"
    );
}

#[test]
fn x5c_ending_at_an_attackers_self_signed_root_is_refused() {
    let trusted = root(
        "tapgate trusted root",
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    let store = store_with("Trusted", &trusted);

    // The attacker's own root, sent along in x5c: a complete, well-signed chain that ends at
    // a root the store does not hold.
    let evil = root("evil root", IsCa::Ca(BasicConstraints::Unconstrained));
    let int = issue(
        ca_params(
            "evil intermediate",
            IsCa::Ca(BasicConstraints::Unconstrained),
            (2021, 2050),
        ),
        &evil,
    );
    let leaf = issue(leaf_params((2022, 2045)), &int);
    let x5c = registered_x5c(
        &packed_registration(&leaf, &[&leaf.cert, &int.cert, &evil.cert]),
        now(),
    );
    let e = store.verify(&x5c, now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-untrusted", "{e}");
    assert!(e.to_string().contains("self-signed certificate"), "{e}");

    // The same with a root that copies the trusted root's name: the name matches, the key
    // does not.
    let twin = root(
        "tapgate trusted root",
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    let leaf = issue(leaf_params((2022, 2045)), &twin);
    let x5c = registered_x5c(
        &packed_registration(&leaf, &[&leaf.cert, &twin.cert]),
        now(),
    );
    let e = store.verify(&x5c, now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-untrusted", "{e}");
    assert!(e.to_string().contains("was not signed by it"), "{e}");
}

#[test]
fn add_pem_counts_dedupes_and_refuses_junk() {
    let a = root("tapgate a", IsCa::Ca(BasicConstraints::Unconstrained));
    let b = root("tapgate b", IsCa::Ca(BasicConstraints::Unconstrained));
    let mut s = TrustStore::empty();
    assert!(s.is_empty());
    let bundle = format!("# corporate roots\n{}\n{}", a.cert.pem(), b.cert.pem());
    assert_eq!(s.add_pem("Corp", &bundle).unwrap(), 2);
    assert_eq!(s.add_pem("Corp again", &a.cert.pem()).unwrap(), 0);
    assert_eq!(s.len(), 2);
    for junk in [
        "",
        "not pem at all",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ] {
        let e: Error = s.add_pem("Bad", junk).unwrap_err();
        assert_eq!(e.reason(), "trust-anchor-invalid", "{junk:?}");
        assert!(e.to_string().contains("\"Bad\""), "{e}");
    }
    // A bundle with one bad block adds nothing.
    let mixed = format!(
        "{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        a.cert.pem()
    );
    let mut fresh = TrustStore::empty();
    assert!(fresh.add_pem("Mixed", &mixed).is_err());
    assert!(fresh.is_empty());
}

#[test]
fn chain_input_limits_and_garbage() {
    let store = TrustStore::builtin();
    let e = store.verify(&[], now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-untrusted");
    let e = store.verify(&[vec![0x30, 0x00]], now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-invalid");
    let ca = root("tapgate root", IsCa::Ca(BasicConstraints::Unconstrained));
    let many = vec![ca.cert.der().to_vec(); 17];
    let e = store.verify(&many, now()).unwrap_err();
    assert_eq!(e.reason(), "attestation-chain-invalid");
    assert!(e.to_string().contains("17 certificates"), "{e}");
}
