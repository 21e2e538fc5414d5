//! Shared by the fuzz targets and the seed writer: the byte framings that
//! carry a whole ceremony (relying party, challenge, response fields) in one
//! fuzzer input, and the fixed key ring the token target verifies against.
//!
//! A framing lets libFuzzer mutate the *binary* fields (CBOR, authenticator
//! data, signatures) directly instead of their base64url text, and lets one
//! seed carry a test vector's own relying party, so mutations start deep in
//! the verification procedure rather than at the first RP-id check. The
//! JSON layer has its own target (`response_json`).
//!
//! Framing: a flags byte, then fields, each a little-endian length (`u8`
//! or `u16`) followed by that many bytes; the last field takes the rest.
//! A short input simply yields empty fields: every byte string decodes.

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tapgate_webauthn::{RelyingParty, UserVerification};

/// Reads length-prefixed fields; never fails, a short input gives empty fields.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader(data)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let b = self.take(2);
        let mut a = [0u8; 2];
        a[..b.len()].copy_from_slice(b);
        u16::from_le_bytes(a)
    }

    pub fn u32(&mut self) -> u32 {
        let b = self.take(4);
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        u32::from_le_bytes(a)
    }

    pub fn u64(&mut self) -> u64 {
        let b = self.take(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }

    pub fn short(&mut self) -> &'a [u8] {
        let n = self.u8();
        self.take(usize::from(n))
    }

    pub fn long(&mut self) -> &'a [u8] {
        let n = self.u16();
        self.take(usize::from(n))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// Writes the same framing (for seeds).
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    /// A field of at most 255 bytes (longer input is cut).
    pub fn short(mut self, b: &[u8]) -> Self {
        let b = &b[..b.len().min(255)];
        self.0.push(b.len() as u8);
        self.0.extend(b);
        self
    }
    /// A field of at most 65 535 bytes (longer input is cut).
    pub fn long(mut self, b: &[u8]) -> Self {
        let b = &b[..b.len().min(65_535)];
        self.0.extend((b.len() as u16).to_le_bytes());
        self.0.extend(b);
        self
    }
    pub fn rest(mut self, b: &[u8]) -> Vec<u8> {
        self.0.extend(b);
        self.0
    }
}

/// Bits 0–1 of the flags byte: the relying party's UV requirement.
pub fn uv_from(flags: u8) -> UserVerification {
    match flags & 3 {
        0 => UserVerification::Required,
        1 => UserVerification::Preferred,
        _ => UserVerification::Discouraged,
    }
}

pub fn uv_bits(uv: UserVerification) -> u8 {
    match uv {
        UserVerification::Required => 0,
        UserVerification::Preferred => 1,
        UserVerification::Discouraged => 2,
    }
}

pub fn relying_party(rp_id: &[u8], origin: &[u8], flags: u8) -> RelyingParty {
    RelyingParty {
        id: String::from_utf8_lossy(rp_id).into_owned(),
        origins: vec![String::from_utf8_lossy(origin).into_owned()],
        user_verification: uv_from(flags),
    }
}

pub fn time(secs: u64) -> SystemTime {
    // Any u64 is accepted by the framing; clamp to what SystemTime holds.
    UNIX_EPOCH + Duration::from_secs(secs % (1 << 40))
}

/// The key the token target's ring signs and verifies with. A fixed key
/// (not a fresh one per run) so that a crash input reproduces. Test-only:
/// it signs nothing outside the fuzzer.
pub const FUZZ_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCVDCWY6dqsdThfk6
7kQtJu84M1eluUzpH7R3eOL90R+hRANCAAQB2bQPsYQhlOLzJTXx8EMNoyJ4Vm/0
ATTrWEmZp3Wdg0QTW/vFFo/cAwuWIdjIL1IRbepl5pkmdj5WnoB7XiKW
-----END PRIVATE KEY-----
";

pub const FUZZ_ISSUER: &str = "http://localhost:8080";
pub const FUZZ_AUDIENCE: &str = "http://localhost:8080";

/// The token target's key ring: the fixed key, issuer `FUZZ_ISSUER`.
pub fn key_ring() -> tapgate::token::KeyRing {
    // The constant above is a valid PKCS#8 P-256 key (the seeds test shows it).
    let key = tapgate::token::SigningKey::from_pem(FUZZ_KEY_PEM).expect("fuzz key parses");
    tapgate::token::KeyRing::new(key, Vec::new(), FUZZ_ISSUER.to_owned())
}

/// ES256-signs `header.payload` (both raw JSON bytes, base64url-encoded
/// here) with the fuzz key: a token whose signature verifies whatever the
/// header and claims say.
pub fn sign_with_fuzz_key(header: &[u8], payload: &[u8]) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let input = format!(
        "{}.{}",
        tapgate_webauthn::base64url(header),
        tapgate_webauthn::base64url(payload)
    );
    let der = pem::parse(FUZZ_KEY_PEM).expect("fuzz key is PEM");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.contents())
        .expect("fuzz key parses");
    let sig = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("ES256 signing");
    format!("{input}.{}", tapgate_webauthn::base64url(sig.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_key_parses_and_signs_what_the_ring_accepts() {
        let ring = key_ring();
        let kid = ring.jwks()["keys"][0]["kid"].as_str().unwrap().to_owned();
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#);
        let payload = format!(
            r#"{{"iss":"{FUZZ_ISSUER}","aud":"{FUZZ_AUDIENCE}","iat":1000,"exp":2000,"sub":"u"}}"#
        );
        let token = sign_with_fuzz_key(header.as_bytes(), payload.as_bytes());
        let v = ring.verify_assertion(&token, FUZZ_AUDIENCE, 1500).unwrap();
        assert_eq!(v["sub"], "u");
    }

    #[test]
    fn framing_round_trips_and_short_input_is_empty_fields() {
        let w = Writer::default()
            .u8(7)
            .u64(42)
            .short(b"rp")
            .long(b"origin")
            .rest(b"tail");
        let mut r = Reader::new(&w);
        assert_eq!(r.u8(), 7);
        assert_eq!(r.u64(), 42);
        assert_eq!(r.short(), b"rp");
        assert_eq!(r.long(), b"origin");
        assert_eq!(r.rest(), b"tail");
        let mut r = Reader::new(&[5, 1]);
        assert_eq!(r.u8(), 5);
        assert_eq!(r.u16(), 1);
        assert!(r.long().is_empty() && r.rest().is_empty());
    }
}
