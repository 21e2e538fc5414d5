//! `tapgate-bench-tool`: what bench/run needs that no stock tool does.
//!
//! ```text
//! tapgate-bench-tool session --key PEM --issuer URL [--ttl SECS] [--role R]
//!     print a session token signed by KeyRing::issue_session (the cookie value)
//! tapgate-bench-tool verify --sample JSON --what auth|auth-struct|reg|raw --seconds S
//!     ceremony verifications per second on the calling thread (pin it with taskset)
//! tapgate-bench-tool register --base URL --origin URL --invite TOKEN --out FILE
//!     a real registration through the HTTP API with a software authenticator;
//!     writes the credential (private key included) to FILE
//! tapgate-bench-tool login-load --base URL --origin URL --cred FILE --concurrency N --seconds S
//!     full sign-ins (options + verify) in a closed loop; JSON summary on stdout
//! ```
//!
//! The software authenticator signs with aws-lc-rs; it answers with
//! `fmt: "none"`, UP|UV set, counter 0 (no counter), not backup-eligible.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};
use tapgate_webauthn::{base64url, base64url_decode};

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: tapgate-bench-tool session|verify|register|login-load --help");
        return ExitCode::from(2);
    };
    let flags = match parse_flags(rest) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "session" => session(&flags),
        "verify" => verify(&flags),
        "register" => rt().and_then(|rt| rt.block_on(register(&flags))),
        "login-load" => rt().and_then(|rt| rt.block_on(login_load(&flags))),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapgate-bench-tool {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Flags(HashMap<String, String>);

fn parse_flags(args: &[String]) -> Res<Flags> {
    let mut m = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --flag, got {a:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        m.insert(name.to_owned(), v.clone());
    }
    Ok(Flags(m))
}

impl Flags {
    fn get(&self, name: &str) -> Res<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }
    fn num(&self, name: &str, default: f64) -> Res<f64> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number")),
        }
    }
}

fn rt() -> Res<tokio::runtime::Runtime> {
    // One thread: the load generator should cost as little CPU as it can.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- session

fn session(f: &Flags) -> Res<()> {
    use tapgate::model::{AuthnFacts, Email, Principal, Role, Subject};
    let pem = std::fs::read_to_string(f.get("key")?).map_err(|e| e.to_string())?;
    let key = tapgate::token::SigningKey::from_pem(&pem).map_err(|e| e.to_string())?;
    let ring = tapgate::token::KeyRing::new(key, Vec::new(), f.get("issuer")?.to_owned());
    let now = now_unix();
    let principal = Principal {
        subject: Subject("u_bench".into()),
        email: Email::parse("bench@example.com")?,
        roles: vec![Role::parse(f.get("role").unwrap_or("member"))?],
        auth_time: now,
        cred: "bench-credential".into(),
        authn: AuthnFacts {
            uv: true,
            aaguid: "00000000-0000-0000-0000-000000000000".into(),
            ..Default::default()
        },
        keys: 1,
    };
    let ttl = f.num("ttl", 3600.0)? as u64;
    // Revocation epoch 0 (never revoked), one active key.
    let (token, _) = ring.issue_session(&principal, 0, 1, now, ttl);
    println!("{token}");
    Ok(())
}

// ----------------------------------------------------------------- verify

fn verify(f: &Flags) -> Res<()> {
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(f.get("sample")?).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let seconds = f.num("seconds", 1.0)?;
    let s = |k: &str| sample[k].as_str().unwrap_or_default().to_owned();
    let rp = tapgate_webauthn::RelyingParty {
        id: s("rpId"),
        origins: vec![s("origin")],
        user_verification: tapgate_webauthn::UserVerification::Required,
    };
    let reg_challenge = base64url_decode(&s("regChallenge")).map_err(|e| e.to_string())?;
    let auth_challenge = base64url_decode(&s("authChallenge")).map_err(|e| e.to_string())?;
    let reg_text = sample["reg"].to_string();
    let auth_text = sample["auth"].to_string();
    let now = SystemTime::now();

    let reg_once = || -> Res<tapgate_webauthn::Registration> {
        let r: tapgate_webauthn::RegistrationResponseJson =
            serde_json::from_str(&reg_text).map_err(|e| e.to_string())?;
        tapgate_webauthn::verify_registration(&rp, &reg_challenge, &r, now)
            .map_err(|e| e.to_string())
    };
    let registration = reg_once()?;
    let stored = tapgate_webauthn::StoredCredential {
        id: &registration.credential_id,
        public_key: &registration.public_key,
        sign_count: registration.sign_count,
        backup_eligible: registration.flags.be,
    };
    let parsed: tapgate_webauthn::AuthenticationResponseJson =
        serde_json::from_str(&auth_text).map_err(|e| e.to_string())?;
    let auth_parsed = || -> Res<()> {
        let a = tapgate_webauthn::verify_authentication(
            &rp,
            &auth_challenge,
            &parsed,
            &stored,
            now,
        )
        .map_err(|e| e.to_string())?;
        if a.sign_count != 2 {
            return Err("unexpected counter".into());
        }
        Ok(())
    };
    // What a server does per sign-in: parse the JSON body, then verify.
    let auth_text_once = || -> Res<()> {
        let r: tapgate_webauthn::AuthenticationResponseJson =
            serde_json::from_str(&auth_text).map_err(|e| e.to_string())?;
        tapgate_webauthn::verify_authentication(&rp, &auth_challenge, &r, &stored, now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // The physical limit: SHA-256 of the signed bytes plus one P-256 verify.
    let spki = base64url_decode(sample["reg"]["response"]["publicKey"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let point = spki
        .get(spki.len().saturating_sub(65)..)
        .ok_or("short SPKI")?
        .to_vec();
    let resp = &sample["auth"]["response"];
    let dec = |k: &str| base64url_decode(resp[k].as_str().unwrap_or("")).unwrap_or_default();
    let mut signed = dec("authenticatorData");
    signed.extend_from_slice(tapgate::crypto::sha256(&dec("clientDataJSON")).as_ref());
    let sig = dec("signature");
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point);
    let raw = || -> Res<()> { key.verify(&signed, &sig).map_err(|_| "raw verify failed".into()) };

    let what = f.get("what")?;
    let op: &dyn Fn() -> Res<()> = match what {
        "auth" => &auth_text_once,
        "auth-struct" => &auth_parsed,
        "reg" => &|| reg_once().map(|_| ()),
        "raw" => &raw,
        other => return Err(format!("--what {other:?}: auth, auth-struct, reg or raw")),
    };
    op()?;
    let cpu0 = thread_cpu_seconds()?;
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    let mut ops = 0u64;
    let elapsed = loop {
        for _ in 0..100 {
            op()?;
        }
        ops += 100;
        let e = start.elapsed();
        if e >= deadline {
            break e.as_secs_f64();
        }
    };
    let cpu = thread_cpu_seconds()? - cpu0;
    println!(
        "{}",
        json!({"ops": ops, "seconds": elapsed, "cpu_seconds": cpu,
               "per_sec": ops as f64 / elapsed, "per_cpu_sec": ops as f64 / cpu})
    );
    Ok(())
}

/// CPU time of this (single-threaded) process, in nanoseconds resolution:
/// the first field of /proc/thread-self/schedstat. Rates per CPU-second do
/// not depend on how much of the core other processes took meanwhile.
fn thread_cpu_seconds() -> Res<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").map_err(|e| e.to_string())?;
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("cannot read /proc/thread-self/schedstat")?;
    Ok(ns as f64 / 1e9)
}

// ----------------------------------------------- software authenticator

struct Authenticator {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    rp_id: String,
}

impl Authenticator {
    fn sign(&self, msg: &[u8]) -> Res<Vec<u8>> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| "signing failed".into())
    }

    fn auth_data(&self, flags: u8) -> Vec<u8> {
        let mut d = tapgate::crypto::sha256(self.rp_id.as_bytes()).as_ref().to_vec();
        d.push(flags);
        d.extend_from_slice(&0u32.to_be_bytes());
        d
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.get()` answered, as `toJSON()` gives it.
    fn assert(&self, challenge: &str, origin: &str) -> Res<Value> {
        let cdj = Self::client_data("webauthn.get", challenge, origin);
        let ad = self.auth_data(0x05); // UP | UV
        let mut signed = ad.clone();
        signed.extend_from_slice(tapgate::crypto::sha256(&cdj).as_ref());
        let id = base64url(&self.credential_id);
        Ok(json!({
            "id": id, "rawId": id, "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": base64url(&cdj),
                "authenticatorData": base64url(&ad),
                "signature": base64url(&self.sign(&signed)?),
                "userHandle": base64url(&self.user_handle),
            }
        }))
    }

    fn to_json(&self) -> Value {
        json!({
            "pkcs8": base64url(&self.pkcs8),
            "credentialId": base64url(&self.credential_id),
            "userHandle": base64url(&self.user_handle),
            "rpId": self.rp_id,
        })
    }

    fn from_json(v: &Value) -> Res<Authenticator> {
        let b = |k: &str| base64url_decode(v[k].as_str().unwrap_or("")).map_err(|e| e.to_string());
        let pkcs8 = b("pkcs8")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
            .map_err(|e| e.to_string())?;
        Ok(Authenticator {
            pair,
            pkcs8,
            credential_id: b("credentialId")?,
            user_handle: b("userHandle")?,
            rp_id: v["rpId"].as_str().unwrap_or("").to_owned(),
        })
    }
}

fn cbor(v: &ciborium::Value) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Res<(Value, Vec<String>)> {
    let r = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}: {text}"));
    }
    let v = serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}: {text}"))?;
    Ok((v, cookies))
}

// --------------------------------------------------------------- register

async fn register(f: &Flags) -> Res<()> {
    let base = f.get("base")?.trim_end_matches('/');
    let origin = f.get("origin")?;
    let client = reqwest::Client::new();
    let (opts, _) = post(
        &client,
        &format!("{base}/.tapgate/api/register/options"),
        &json!({"invite": f.get("invite")?}),
    )
    .await?;
    let pk = &opts["publicKey"];
    let challenge = pk["challenge"].as_str().ok_or("no challenge")?;
    let rp_id = pk["rp"]["id"].as_str().ok_or("no rp.id")?.to_owned();
    let user_handle =
        base64url_decode(pk["user"]["id"].as_str().ok_or("no user.id")?).map_err(|e| e.to_string())?;

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|e| e.to_string())?
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
        .map_err(|e| e.to_string())?;
    let point = pair.public_key().as_ref().to_vec();
    let mut credential_id = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut credential_id).map_err(|e| e.to_string())?;
    let a = Authenticator {
        pkcs8,
        pair,
        credential_id,
        user_handle,
        rp_id,
    };

    use ciborium::Value as C;
    let cose = cbor(&C::Map(vec![
        (C::Integer(1.into()), C::Integer(2.into())),
        (C::Integer(3.into()), C::Integer((-7).into())),
        (C::Integer((-1).into()), C::Integer(1.into())),
        (C::Integer((-2).into()), C::Bytes(point[1..33].to_vec())),
        (C::Integer((-3).into()), C::Bytes(point[33..65].to_vec())),
    ]))?;
    let mut ad = a.auth_data(0x45); // UP | UV | AT
    ad.extend_from_slice(&[0u8; 16]); // AAGUID: unknown
    ad.extend_from_slice(&(a.credential_id.len() as u16).to_be_bytes());
    ad.extend_from_slice(&a.credential_id);
    ad.extend_from_slice(&cose);
    let att = cbor(&C::Map(vec![
        (C::Text("fmt".into()), C::Text("none".into())),
        (C::Text("attStmt".into()), C::Map(vec![])),
        (C::Text("authData".into()), C::Bytes(ad)),
    ]))?;
    let cdj = Authenticator::client_data("webauthn.create", challenge, origin);
    let id = base64url(&a.credential_id);
    let credential = json!({
        "id": id, "rawId": id, "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": base64url(&cdj),
            "attestationObject": base64url(&att),
            "transports": ["usb"],
        }
    });
    let (_, cookies) = post(
        &client,
        &format!("{base}/.tapgate/api/register/verify"),
        &json!({"credential": credential, "ceremony": opts["ceremony"], "nickname": "bench key"}),
    )
    .await?;
    std::fs::write(f.get("out")?, a.to_json().to_string()).map_err(|e| e.to_string())?;
    let session = cookies
        .iter()
        .find_map(|c| {
            let (name, rest) = c.split_once('=')?;
            name.ends_with("tapgate_session")
                .then(|| rest.split(';').next().unwrap_or("").to_owned())
        })
        .ok_or("no session cookie after registration")?;
    println!("{session}");
    Ok(())
}

// ------------------------------------------------------------- login-load

async fn login_load(f: &Flags) -> Res<()> {
    let base = f.get("base")?.trim_end_matches('/').to_owned();
    let origin = f.get("origin")?.to_owned();
    let cred: Value = serde_json::from_str(
        &std::fs::read_to_string(f.get("cred")?).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let a = std::sync::Arc::new(Authenticator::from_json(&cred)?);
    let concurrency = f.num("concurrency", 16.0)? as usize;
    let seconds = f.num("seconds", 1.0)?;
    let email = f.0.get("email").cloned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    // One sign-in first: a broken setup fails loudly instead of counting errors.
    one_login(&client, &base, &origin, &a, email.as_deref()).await?;

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, origin, a, email) = (
            client.clone(),
            base.clone(),
            origin.clone(),
            a.clone(),
            email.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                match one_login(&client, &base, &origin, &a, email.as_deref()).await {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, fe) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    println!(
        "{}",
        json!({
            "logins": lat.len(), "errors": errors, "first_error": first_error,
            "seconds": elapsed, "per_sec": lat.len() as f64 / elapsed,
            "p50_us": pct(0.50), "p99_us": pct(0.99),
        })
    );
    Ok(())
}

/// One sign-in: options → assertion → verify, as a non-browser client.
async fn one_login(
    client: &reqwest::Client,
    base: &str,
    origin: &str,
    a: &Authenticator,
    email: Option<&str>,
) -> Res<()> {
    let body = match email {
        Some(e) => json!({"email": e}),
        None => json!({}),
    };
    let (opts, _) = post(client, &format!("{base}/.tapgate/api/login/options"), &body).await?;
    let challenge = opts["publicKey"]["challenge"]
        .as_str()
        .ok_or("no challenge")?;
    let credential = a.assert(challenge, origin)?;
    let (done, _) = post(
        client,
        &format!("{base}/.tapgate/api/login/verify"),
        &json!({"credential": credential, "ceremony": opts["ceremony"]}),
    )
    .await?;
    if done.get("token").is_none() {
        return Err(format!("no token in login answer: {done}"));
    }
    Ok(())
}
