//! Differential test against py_webauthn (PyPI `webauthn`): both implementations must agree on
//! accept/reject for every supported vector and a few hundred deterministic corruptions of
//! them. Each principled disagreement is an explicit rule in `explain`, checked here.
//!
//! Needs `python3` with `pip install webauthn`. Without it the test prints SKIP, unless
//! `TAPGATE_REQUIRE_DIFFERENTIAL=1` (CI) makes it fail.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{
    Case, Expect, Field, Kind, Rng, SUPPORTED_ALGS, SUPPORTED_FORMATS, field_bytes, fields_of,
    load_all, mask, peek_attestation, run, with_field,
};
use serde_json::{Value as J, json};
use tapgate_webauthn::{Error, UserVerification, base64url, base64url_decode};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/differential/py_verify.py"
);

struct DiffCase {
    case: Case,
    label: String,
    fmt: Option<String>,
    mutated: Option<(Field, usize)>,
}

fn fmt_of(case: &Case) -> Option<String> {
    match &case.kind {
        Kind::Registration(r) => base64url_decode(&r.response.attestation_object)
            .ok()
            .and_then(|a| peek_attestation(&a))
            .map(|p| p.fmt),
        Kind::Authentication { .. } => None,
    }
}

/// COSE algorithms tapgate verifies but py_webauthn does not (it has no ES384): vectors with
/// such keys are left out, as neither side's verdict says anything about the other.
const PY_LACKS: [i64; 1] = [-35];

fn credential_alg(c: &Case) -> Option<i64> {
    match &c.kind {
        Kind::Registration(r) => base64url_decode(&r.response.attestation_object)
            .ok()
            .and_then(|a| peek_attestation(&a))
            .and_then(|p| p.alg),
        Kind::Authentication { public_key, .. } => common::peek_cose_alg(public_key),
    }
}

/// The vectors both sides can judge: one RP id, a format and algorithm both support, and no
/// fixture-encoding deviation.
fn base_cases() -> Vec<DiffCase> {
    load_all()
        .cases
        .into_iter()
        .filter(|c| {
            c.rp_ids.len() == 1
                && !c.unsupported
                && c.expect != Expect::Refuse("base64url-invalid")
                && !credential_alg(c).is_some_and(|a| PY_LACKS.contains(&a))
        })
        .map(|c| DiffCase {
            label: format!("{} / {}", c.file, c.name),
            fmt: fmt_of(&c),
            mutated: None,
            case: c,
        })
        .collect()
}

fn corruptions(good: &[DiffCase]) -> Vec<DiffCase> {
    let mut rng = Rng(0xd1ff_5eed);
    let mut out = Vec::new();
    for d in good.iter().filter(|d| d.case.expect == Expect::Accept) {
        for &field in fields_of(&d.case) {
            let orig = field_bytes(&d.case, field);
            for _ in 0..3 {
                let pos = rng.below(orig.len());
                let mut b = orig.clone();
                b[pos] ^= mask(pos);
                out.push(DiffCase {
                    case: with_field(&d.case, field, &b),
                    label: format!("{} [{field:?} byte {pos} ^ {:#04x}]", d.label, mask(pos)),
                    fmt: d.fmt.clone(),
                    mutated: Some((field, pos)),
                });
            }
        }
    }
    out
}

fn to_py(id: usize, d: &DiffCase) -> J {
    let c = &d.case;
    let mut v = json!({
        "id": id,
        "expected_challenge_b64url": base64url(&c.challenge),
        "expected_origins": c.origins,
        "expected_rp_id": c.rp_ids[0],
        "require_uv": c.uv == UserVerification::Required,
        "supported_algs": SUPPORTED_ALGS,
    });
    match &c.kind {
        Kind::Registration(r) => {
            v["ceremony"] = json!("registration");
            v["credential"] = serde_json::to_value(r).unwrap();
        }
        Kind::Authentication {
            response,
            public_key,
            sign_count,
            ..
        } => {
            v["ceremony"] = json!("authentication");
            v["credential"] = serde_json::to_value(response).unwrap();
            v["public_key_b64url"] = json!(base64url(public_key));
            v["sign_count"] = json!(sign_count);
        }
    }
    v
}

/// Why the two verdicts may differ for this case, or None when they must agree.
fn explain(d: &DiffCase, ours: &Result<(), Error>, py: &J) -> Option<&'static str> {
    let py_ok = py["ok"] == J::Bool(true);
    let py_msg = py["message"].as_str().unwrap_or("");
    let registration = matches!(d.case.kind, Kind::Registration(_));
    match ours {
        Err(e) if py_ok => match e.reason() {
            // py_webauthn reads neither member; tapgate never allows embedding.
            "cross-origin-refused" | "top-origin-refused" => {
                Some("py_webauthn does not check crossOrigin/topOrigin")
            }
            // Without trust anchors py_webauthn checks nothing about the certificate but its
            // key; tapgate applies the §8.2.1 leaf requirements and the validity period.
            "attestation-certificate-invalid"
            | "attestation-certificate-expired"
            | "attestation-aaguid-mismatch"
                if d.fmt.as_deref() == Some("packed") || d.fmt.as_deref() == Some("fido-u2f") =>
            {
                Some("py_webauthn does not check attestation certificate requirements")
            }
            // py_webauthn takes the credential id from authenticatorData without comparing it
            // with rawId; tapgate refuses to store a key under an id the browser did not
            // report (reachable where the id bytes are not signed: `none`, or flips in the
            // length that shift the id).
            "credential-id-mismatch" if registration => {
                Some("py_webauthn does not compare rawId with the authenticator's credential id")
            }
            // §6.5.4 makes attStmt mandatory; py_webauthn treats a missing one (here a renamed
            // key) as empty, which `none` then accepts.
            "attestation-object-malformed" if registration && d.fmt.as_deref() == Some("none") => {
                Some("py_webauthn accepts an attestation object without attStmt")
            }
            // A corrupted, unattested `none` key: py_webauthn stores it unchecked, tapgate
            // refuses a key that is not a valid point / usable key.
            "public-key-invalid" | "public-key-malformed"
                if registration && d.fmt.as_deref() == Some("none") =>
            {
                Some("py_webauthn does not validate a none registration's public key")
            }
            // The challenge spelled differently (e.g. non-zero trailing bits) but decoding to
            // the same bytes under Python's lenient decoder. The spec compares the encoded
            // strings, as tapgate does. Only reachable where clientDataJSON is unsigned.
            "challenge-mismatch"
                if d.fmt.as_deref() == Some("none")
                    && matches!(d.mutated, Some((Field::ClientDataJson, _))) =>
            {
                Some("py_webauthn decodes the challenge leniently")
            }
            // crossOrigin of another JSON type, a repeated member, invalid UTF-8 in a member
            // py ignores: tapgate refuses malformed client data outright.
            "client-data-malformed"
                if d.fmt.as_deref() == Some("none")
                    && matches!(d.mutated, Some((Field::ClientDataJson, _))) =>
            {
                Some("tapgate refuses malformed clientDataJSON members py_webauthn ignores")
            }
            _ => None,
        },
        Ok(()) if !py_ok => {
            if py_msg.contains("token_binding") || py_msg.contains("tokenBinding") {
                Some("tokenBinding is ignored (removed from WebAuthn Level 3)")
            } else if py_msg.contains("AAGUID") && d.fmt.as_deref() == Some("fido-u2f") {
                // §8.6 does not require a zero AAGUID; the W3C vector has a random one.
                Some("py_webauthn requires a zero AAGUID for fido-u2f")
            } else if matches!(d.fmt.as_deref(), Some("android-key" | "apple"))
                && (py_msg.contains("Certificate chain could not be validated")
                    || py_msg.contains("Could not parse x5c root certificate"))
            {
                // py_webauthn builds the chain inside registration, to its own roots and at
                // the current time (these chains expired or end at test CAs); tapgate does it
                // in TrustStore::verify at the time given (tests/trust.rs).
                Some("py_webauthn validates android-key/apple chains during registration")
            } else if d.fmt.as_deref() == Some("android-key") && py_msg.contains("x5c was empty") {
                // §8.4 asks for the leaf only; the W3C vector sends just the leaf.
                Some("py_webauthn requires an android-key x5c longer than the leaf")
            } else if d.fmt.as_deref() == Some("tpm")
                && py_msg.contains("Unrecognized TPM Manufacturer")
            {
                // The W3C vector's id:00000000 and the FIDO test TPMs' id:FFFFF1D0 are in no
                // registry; which TPMs count is the trust store's question.
                Some("py_webauthn requires a TPM manufacturer from the TCG vendor registry")
            } else if d.fmt.as_deref() == Some("tpm")
                && py["error"] == "ValueError"
                && py_msg.contains("error parsing asn1 value")
            {
                // pyca/cryptography parses every extension of the AIK certificate (one real
                // vector's certificatePolicies already fails); tapgate reads the extensions
                // §8.3.1 names, and the issuer's signature covers the rest.
                Some("py_webauthn parses every AIK certificate extension strictly")
            } else {
                None
            }
        }
        _ => None,
    }
}

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import webauthn"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn agrees_with_py_webauthn() {
    if !python_ready() {
        if std::env::var("TAPGATE_REQUIRE_DIFFERENTIAL").as_deref() == Ok("1") {
            panic!("python3 with the `webauthn` package is required (pip install webauthn)");
        }
        println!("SKIP differential test: python3 with the `webauthn` package is not available");
        return;
    }
    assert!(SUPPORTED_FORMATS.contains(&"none"));

    let mut cases = base_cases();
    let extra = corruptions(&cases);
    cases.extend(extra);

    let input: Vec<J> = cases.iter().enumerate().map(|(i, d)| to_py(i, d)).collect();
    let path =
        std::env::temp_dir().join(format!("tapgate-differential-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&input).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "py_verify.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<J> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts.len(), cases.len());

    let mut agree = [0usize; 2]; // [both accept, both refuse]
    let mut explained: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, (d, py)) in cases.iter().zip(&verdicts).enumerate() {
        assert_eq!(py["id"], json!(i));
        let ours = run(&d.case);
        let py_ok = py["ok"] == J::Bool(true);
        if ours.is_ok() == py_ok {
            agree[usize::from(!py_ok)] += 1;
            continue;
        }
        match explain(d, &ours, py) {
            Some(why) => *explained.entry(why).or_default() += 1,
            None => failures.push(format!(
                "{}: tapgate {:?}, py_webauthn {}",
                d.label,
                ours.as_ref().map_err(|e| format!("{}: {e}", e.reason())),
                py
            )),
        }
    }
    println!(
        "differential: {} cases ({} vectors, {} corruptions): {} both accept, {} both refuse",
        cases.len(),
        cases.iter().filter(|d| d.mutated.is_none()).count(),
        cases.iter().filter(|d| d.mutated.is_some()).count(),
        agree[0],
        agree[1]
    );
    for (why, n) in &explained {
        println!("  documented disagreement {n}: {why}");
    }
    assert!(
        failures.is_empty(),
        "{} unexplained disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases.len() > 300);
}
