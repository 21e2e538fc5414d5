//! Writes `fuzz/seeds/<target>/`: starting inputs for each fuzz target.
//!
//! - `registration`, `authentication`, `response_json`: every test vector
//!   that crates/webauthn loads (W3C, py_webauthn, SimpleWebAuthn,
//!   Chromium's virtual authenticator, the derived r = s = 0 and empty
//!   signature cases), in each target's framing;
//! - `token`: sessions, ceremony states and assertions signed by the fuzz
//!   key, their decoded header/payload pairs, and the forgeries a token
//!   verifier must refuse (`alg: none`, HS256, truncated signature);
//! - `config`: the configurations of the docs and tests, with env overrides.
//!
//! Run from `fuzz/`: `cargo run --example seeds`. The seeds are committed;
//! re-run after adding vectors. File names are content digests.

#[path = "../../crates/webauthn/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::{Kind, load_all};
use std::path::Path;
use std::time::UNIX_EPOCH;
use tapgate::model::{AuthnFacts, Email, Principal, Role, Subject};
use tapgate::token::{CeremonyKind, CeremonyState};
use tapgate_fuzz::{FUZZ_AUDIENCE, FUZZ_KEY_PEM, Writer, key_ring, uv_bits};
use tapgate_webauthn::{base64url, base64url_decode};

fn write(target: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let name = &tapgate::crypto::sha256_hex(bytes)[..16];
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64url_decode(s).ok()
}

fn webauthn_seeds() -> usize {
    let mut n = 0;
    for case in load_all().cases {
        let now = case
            .now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let origin = case.origins.first().cloned().unwrap_or_default();
        for rp_id in &case.rp_ids {
            match &case.kind {
                Kind::Registration(r) => {
                    write("response_json", &serde_json::to_vec(r).unwrap());
                    let (Some(raw_id), Some(cdj), Some(att)) = (
                        b64(&r.raw_id),
                        b64(&r.response.client_data_json),
                        b64(&r.response.attestation_object),
                    ) else {
                        continue;
                    };
                    let seed = Writer::default()
                        .u8(uv_bits(case.uv))
                        .u64(now)
                        .short(rp_id.as_bytes())
                        .long(origin.as_bytes())
                        .long(&case.challenge)
                        .long(&raw_id)
                        .long(&cdj)
                        .rest(&att);
                    write("registration", &seed);
                    n += 1;
                }
                Kind::Authentication {
                    response,
                    public_key,
                    sign_count,
                    backup_eligible,
                    ..
                } => {
                    write("response_json", &serde_json::to_vec(response).unwrap());
                    let r = &response.response;
                    let (Some(raw_id), Some(cdj), Some(ad), Some(sig)) = (
                        b64(&response.raw_id),
                        b64(&r.client_data_json),
                        b64(&r.authenticator_data),
                        b64(&r.signature),
                    ) else {
                        continue;
                    };
                    let handle = r.user_handle.as_deref().and_then(b64).unwrap_or_default();
                    let seed = Writer::default()
                        .u8(uv_bits(case.uv) | if *backup_eligible { 4 } else { 0 })
                        .u64(now)
                        .u32(*sign_count)
                        .short(rp_id.as_bytes())
                        .long(origin.as_bytes())
                        .long(&case.challenge)
                        .long(&raw_id)
                        .long(&handle)
                        .long(public_key)
                        .long(&cdj)
                        .long(&ad)
                        .rest(&sig);
                    write("authentication", &seed);
                    n += 1;
                }
            }
        }
    }
    n
}

fn token_seeds() {
    const NOW: u64 = 1_700_000_000;
    let ring = key_ring();
    let principal = Principal {
        subject: Subject("u_fuzz".into()),
        email: Email::parse("ann@example.com").unwrap(),
        roles: vec![Role::parse("admin").unwrap()],
        auth_time: NOW,
        cred: "cred-digest".into(),
        authn: AuthnFacts {
            uv: true,
            synced: false,
            attested: true,
            aaguid: "00000000-0000-0000-0000-000000000000".into(),
            root: Some("ab".repeat(32)),
        },
        keys: 1,
    };
    let (session, claims) = ring.issue_session(&principal, 0, 1, NOW, 3600);
    let mut state = CeremonyState::new(&ring, CeremonyKind::Register, b"challenge", NOW, 300);
    state.sub = Some(Subject("u_fuzz".into()));
    state.email = Some(principal.email.clone());
    state.roles = principal.roles.clone();
    state.invite = Some("cd".repeat(32));
    let ceremony = ring.seal_ceremony(&state);
    let login = ring.seal_ceremony(&CeremonyState::new(
        &ring,
        CeremonyKind::Login,
        b"challenge",
        NOW,
        300,
    ));
    let assertion = ring.issue_assertion(&claims, FUZZ_AUDIENCE, NOW, 60);

    let mode0 = |token: &str| {
        write(
            "token",
            &Writer::default().u8(0).u64(NOW + 10).rest(token.as_bytes()),
        )
    };
    for t in [&session, &ceremony, &login, &assertion] {
        mode0(t);
        // Decoded, for the signed-by-the-harness mode.
        let mut parts = t.split('.');
        let header = b64(parts.next().unwrap()).unwrap();
        let payload = b64(parts.next().unwrap()).unwrap();
        let mut body = header.clone();
        body.push(0);
        body.extend(&payload);
        write("token", &Writer::default().u8(1).u64(NOW + 10).rest(&body));
    }
    let payload = session.split('.').nth(1).unwrap();
    let header_of = |h: &str| base64url(h.as_bytes());
    // alg: none, with and without a signature part.
    mode0(&format!(
        "{}.{payload}.",
        header_of(r#"{"alg":"none","typ":"tapgate-session+jwt"}"#)
    ));
    // HS256 "signed" with the public key as secret (the classic confusion).
    let kid = ring.jwks()["keys"][0]["kid"].as_str().unwrap().to_owned();
    let hs = format!(
        "{}.{payload}",
        header_of(&format!(
            r#"{{"alg":"HS256","typ":"tapgate-session+jwt","kid":"{kid}"}}"#
        ))
    );
    let jwk = ring.jwks()["keys"][0].to_string();
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwk.as_bytes()),
        hs.as_bytes(),
    );
    mode0(&format!("{hs}.{}", base64url(mac.as_ref())));
    // Truncated signature, unknown kid, no kid.
    mode0(&session[..session.len() - 8]);
    let body = session.split_once('.').unwrap().1;
    mode0(&format!(
        "{}.{body}",
        header_of(r#"{"alg":"ES256","typ":"tapgate-session+jwt","kid":"unknown"}"#)
    ));
    mode0(&format!(
        "{}.{body}",
        header_of(r#"{"alg":"ES256","typ":"tapgate-session+jwt"}"#)
    ));
    write(
        "token",
        &Writer::default().u8(2).u64(0).rest(FUZZ_KEY_PEM.as_bytes()),
    );
    write(
        "token",
        &Writer::default()
            .u8(2)
            .u64(0)
            .rest(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    );
}

fn config_seeds() {
    let configs: &[(u8, &str, &str)] = &[
        (0, "", ""),
        (1, "", "PORT=9000\nTAPGATE_UPSTREAM=http://127.0.0.1:8081"),
        (
            0,
            r#"public_url = "https://app.example.com"
upstream = "http://127.0.0.1:8081"
listen = "0.0.0.0:8080"
roles = ["admin", "member", "deployer"]
[session]
ttl = "8h"
[assertion]
ttl = "60s"
audience = "https://api.example.com"
[store]
url = "sqlite://data/tapgate.db"
[keys]
signing_key_file = "key.pem"
[webauthn]
rp_id = "example.com"
rp_name = "Example"
user_verification = "required"
challenge_ttl = "2m"
[headers]
iap = true
oauth2_proxy = true
[proxy]
timeout = "30s"
connect_timeout = "2s"
[trust]
builtin_roots = true
root_files = ["missing-root.pem"]
allowed_aaguids = ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]
credentials = "any"
allow_synced = true
[[route]]
path = "/healthz"
public = true
[[route]]
host = "*.example.com"
path = "/admin/"
methods = ["GET", "POST"]
allow_roles = ["admin"]
max_auth_age = "5m"
[[route]]
path = "/deploy/**"
methods = ["POST"]
allow_roles = ["deployer"]
credentials = "hardware"
[[route]]
path = "/"
allow_emails = ["ann@example.com"]
allow_domains = ["example.com"]
"#,
            "TAPGATE_SESSION__TTL=1h\nTAPGATE_KEYS__SIGNING_KEY=not a pem\nTAPGATE_UNKNOWN=1",
        ),
        (
            0,
            r#"public_url = "http://app.example.com"
upstream = "ftp://files.example.com"
[session]
ttl = "forever"
[assertion]
ttl = "10m"
[webauthn]
user_verification = "sometimes"
challenge_ttl = "1s"
[[route]]
path = "admin"
allow_roles = ["admin"]
[[route]]
path = "/x"
allow_roles = ["Bad Role"]
[[route]]
path = "/y"
"#,
            "",
        ),
        (0, "[sesion]\nttl = \"1h\"\n", "TAPGATE_ROUTE__PATH=/x"),
    ];
    for (mode, toml, env) in configs {
        let mut bytes = vec![*mode];
        bytes.extend(toml.as_bytes());
        bytes.push(0);
        bytes.extend(env.as_bytes());
        write("config", &bytes);
    }
}

fn main() {
    let n = webauthn_seeds();
    token_seeds();
    config_seeds();
    println!("wrote {n} ceremony seeds plus token and config seeds under fuzz/seeds/");
}
