//! Bounded no-panic test: random, truncated, extended and spliced byte strings through every
//! parser and through both verification functions. Deterministic (fixed seed), a few seconds.

mod common;

use common::{Kind, Rng, field_bytes, fields_of, good_cases, with_field};
use tapgate_webauthn::{
    RelyingParty, StoredCredential, fuzz, verify_authentication, verify_registration,
};

fn verify_any(case: &common::Case) {
    let rp = RelyingParty {
        id: case.rp_ids[0].clone(),
        origins: case.origins.clone(),
        user_verification: case.uv,
    };
    match &case.kind {
        Kind::Registration(r) => {
            let _ = verify_registration(&rp, &case.challenge, r, case.now);
        }
        Kind::Authentication {
            response,
            stored_id,
            public_key,
            sign_count,
            backup_eligible,
        } => {
            let stored = StoredCredential {
                id: stored_id,
                public_key,
                sign_count: *sign_count,
                backup_eligible: *backup_eligible,
            };
            let _ = verify_authentication(&rp, &case.challenge, response, &stored, case.now);
            // The stored key is input too (a corrupted database row must not panic).
            let mut rng = Rng(public_key.len() as u64 + 7);
            let bad_key = rng.bytes(public_key.len());
            let stored = StoredCredential {
                public_key: &bad_key,
                ..stored
            };
            let _ = verify_authentication(&rp, &case.challenge, response, &stored, case.now);
        }
    }
}

/// CBOR headers that announce far more data than follows: must fail, not allocate it.
const HOSTILE: &[&[u8]] = &[
    &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61],
    &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02,
    ],
    &[0x5f, 0x41, 0x00, 0x41],
    &[0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18],
    &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01],
];

#[test]
fn parsers_survive_hostile_bytes() {
    let started = std::time::Instant::now();
    let mut rng = Rng(0x7a9_9a7e_5eed);
    let mut n = 0usize;

    for h in HOSTILE {
        fuzz::parsers(h);
        n += 1;
    }
    // Deep nesting: 10 000 nested arrays / maps.
    fuzz::parsers(&vec![0x81; 10_000]);
    fuzz::parsers(&vec![0xa1; 10_000]);
    fuzz::parsers(&[b'['; 10_000]);
    n += 3;

    // Pure noise, of every small length.
    for len in 0..5_000 {
        fuzz::parsers(&rng.bytes(len % 400));
        n += 1;
    }

    // Structured: the fields of good vectors, truncated, extended and spliced.
    let cases = good_cases();
    for case in &cases {
        for &field in fields_of(case) {
            let orig = field_bytes(case, field);
            for _ in 0..30 {
                let mut b = orig.clone();
                match rng.below(4) {
                    0 => b.truncate(rng.below(orig.len() + 1)),
                    1 => {
                        let n = 1 + rng.below(64);
                        b.extend(rng.bytes(n));
                    }
                    2 => {
                        let at = rng.below(b.len() + 1);
                        let n = 1 + rng.below(16);
                        let junk = rng.bytes(n);
                        b.splice(at..at, junk);
                    }
                    _ => {
                        for _ in 0..1 + rng.below(8) {
                            let i = rng.below(b.len().max(1));
                            if let Some(x) = b.get_mut(i) {
                                *x = rng.next() as u8;
                            }
                        }
                    }
                }
                fuzz::parsers(&b);
                verify_any(&with_field(case, field, &b));
                n += 1;
            }
        }
    }
    println!("{n} hostile inputs in {:?}", started.elapsed());
    assert!(n > 8_000);
}
