//! An authentication response (WebAuthn §7.2) through
//! `verify_authentication` against a framed stored credential, with the
//! binary fields mutated as bytes. Framing (see src/lib.rs): flags (bits
//! 0–1 UV requirement, bit 2 stored backup-eligible), u64 now, u32 stored
//! sign count, u8 rp id, u16 origin, u16 challenge, u16 rawId (= the
//! stored id), u16 userHandle (empty: absent), u16 stored COSE key,
//! u16 clientDataJSON, u16 authenticatorData, rest signature.
//!
//! Properties: never panics; `Ok` implies the counter rule held and the
//! backup-eligible flag did not change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapgate_fuzz::{Reader, relying_party, time};
use tapgate_webauthn::{
    AuthenticationResponseJson, AuthenticatorAssertionResponseJson, StoredCredential, base64url,
    verify_authentication,
};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let now = time(r.u64());
    let sign_count = r.u32();
    let rp_id = r.short();
    let origin = r.long();
    let challenge = r.long();
    let raw_id = r.long();
    let user_handle = r.long();
    let public_key = r.long();
    let client_data_json = r.long();
    let authenticator_data = r.long();
    let signature = r.rest();

    let rp = relying_party(rp_id, origin, flags);
    let backup_eligible = flags & 4 != 0;
    let id = base64url(raw_id);
    let response = AuthenticationResponseJson {
        id: id.clone(),
        raw_id: id,
        r#type: "public-key".into(),
        response: AuthenticatorAssertionResponseJson {
            client_data_json: base64url(client_data_json),
            authenticator_data: base64url(authenticator_data),
            signature: base64url(signature),
            user_handle: (!user_handle.is_empty()).then(|| base64url(user_handle)),
        },
        authenticator_attachment: None,
        client_extension_results: serde_json::Value::Null,
    };
    let stored = StoredCredential {
        id: raw_id,
        public_key,
        sign_count,
        backup_eligible,
    };
    if let Ok(auth) = verify_authentication(&rp, challenge, &response, &stored, now) {
        assert!(
            (sign_count == 0 && auth.sign_count == 0) || auth.sign_count > sign_count,
            "accepted a counter of {} after {sign_count}",
            auth.sign_count
        );
        assert_eq!(auth.flags.be, backup_eligible, "backup eligibility changed");
        assert!(auth.flags.up, "accepted without user presence");
    }
});
