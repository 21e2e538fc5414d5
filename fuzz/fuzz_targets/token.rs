//! Token parsing: arbitrary text as a session (cookie or bearer), a
//! ceremony state and an upstream assertion, verified by a key ring with a
//! fixed key (`tapgate_fuzz::FUZZ_KEY_PEM`).
//!
//! Input: a mode byte, a u64 `now`, then
//! - mode 0 (and any other): the rest is the token text — what an attacker
//!   without the key can send (`alg: none`, HS256, other kids, truncations);
//! - mode 1: header JSON, a 0 byte, payload JSON — the harness signs them
//!   with the ring's own key, so claim parsing, `typ`/`kid`/`aud`/`iss` and
//!   the time checks are reached whatever the fuzzer writes;
//! - mode 2: the rest is a signing key PEM (`SigningKey::from_pem`, which
//!   reads operator input).
//!
//! Properties: never panics; a token of one kind is never accepted as
//! another; an accepted session is not expired at `now`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tapgate::token::{KeyRing, LEEWAY_SECS, SessionCache, SigningKey};
use tapgate_fuzz::{FUZZ_AUDIENCE, Reader, key_ring, sign_with_fuzz_key};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(key_ring)
}

fn verify_all(token: &str, now: u64) {
    let ring = ring();
    let session = ring.verify_session(token, now);
    let ceremony = ring.open_ceremony(token, now);
    let assertion = ring.verify_assertion(token, FUZZ_AUDIENCE, now);
    let kinds = [session.is_ok(), ceremony.is_ok(), assertion.is_ok()];
    assert!(
        kinds.iter().filter(|k| **k).count() <= 1,
        "one token accepted as several kinds: {kinds:?}"
    );
    if let Ok(claims) = &session {
        // Saturating, as tapgate's own check: `exp` may be near u64::MAX
        // (crashes/token/exp-u64-max).
        assert!(
            claims.exp.saturating_add(LEEWAY_SECS) > now,
            "expired session accepted"
        );
        assert!(claims.iat <= now + LEEWAY_SECS, "future session accepted");
    }
    if let Ok(state) = &ceremony {
        assert!(state.exp > now, "expired ceremony accepted");
    }
    // The hot path: same verdict through the cache (a fresh one: a cache
    // hit deliberately skips the checks a later `now` would fail, and the
    // fuzzer's clock is not monotonic).
    let cached = SessionCache::new(16).verify(ring, token, now);
    assert_eq!(
        cached.is_ok(),
        session.is_ok(),
        "cache disagrees with verify"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mode = r.u8();
    // Keep `now` in a range where exp/iat arithmetic cannot overflow.
    let now = r.u64() % (1 << 40);
    let rest = r.rest();
    match mode {
        1 => {
            let (header, payload) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            verify_all(&sign_with_fuzz_key(header, payload), now);
        }
        2 => {
            let _ = SigningKey::from_pem(&String::from_utf8_lossy(rest));
        }
        _ => verify_all(&String::from_utf8_lossy(rest), now),
    }
});
