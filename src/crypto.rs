//! Thin, named wrappers over aws-lc-rs primitives used outside the WebAuthn
//! crate: randomness, digests, constant-time comparison. Nothing here is a
//! cryptographic construction of our own.

use aws_lc_rs::{digest, rand::SecureRandom};

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // The system RNG only fails if the OS cannot provide entropy at all, in
    // which case continuing would be unsafe: crash loudly.
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random number generator failed");
    buf
}

/// `n` random bytes as base64url (no padding): invite tokens, subjects.
pub fn random_token(n: usize) -> String {
    tapgate_webauthn::base64url(&random_bytes(n))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 as lower-case hex: how secrets (invite tokens) are stored.
pub fn sha256_hex(data: &[u8]) -> String {
    sha256(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
