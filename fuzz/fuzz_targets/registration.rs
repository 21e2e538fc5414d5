//! A registration response (WebAuthn §7.1) through `verify_registration`,
//! with the binary fields (clientDataJSON, attestationObject) mutated as
//! bytes. Framing (see src/lib.rs): flags (bits 0–1 UV requirement),
//! u64 now, u8 rp id, u16 origin, u16 challenge, u16 rawId,
//! u16 clientDataJSON, rest attestationObject.
//!
//! Property: never panics, never hangs; `Ok` only for a response whose
//! clientDataJSON names the framed challenge and origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapgate_fuzz::{Reader, relying_party, time};
use tapgate_webauthn::{
    AuthenticatorAttestationResponseJson, RegistrationResponseJson, base64url, verify_registration,
};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let now = time(r.u64());
    let rp_id = r.short();
    let origin = r.long();
    let challenge = r.long();
    let raw_id = r.long();
    let client_data_json = r.long();
    let attestation_object = r.rest();

    let rp = relying_party(rp_id, origin, flags);
    let id = base64url(raw_id);
    let response = RegistrationResponseJson {
        id: id.clone(),
        raw_id: id,
        r#type: "public-key".into(),
        response: AuthenticatorAttestationResponseJson {
            client_data_json: base64url(client_data_json),
            attestation_object: base64url(attestation_object),
            transports: None,
            authenticator_data: None,
            public_key: None,
            public_key_algorithm: None,
        },
        authenticator_attachment: None,
        client_extension_results: serde_json::Value::Null,
    };
    if let Ok(reg) = verify_registration(&rp, challenge, &response, now) {
        // Accepting is only right when the browser's data named our challenge.
        let cd: serde_json::Value =
            serde_json::from_slice(client_data_json).expect("accepted clientDataJSON is JSON");
        assert_eq!(
            cd["challenge"]
                .as_str()
                .map(tapgate_webauthn::base64url_decode),
            Some(Ok(challenge.to_vec())),
            "accepted a registration for another challenge"
        );
        assert_eq!(reg.credential_id, raw_id);
    }
});
