//! The JSON layer: arbitrary bytes as the `credential` member a browser
//! posts (`RegistrationResponseJSON` / `AuthenticationResponseJSON`), then
//! through verification against a fixed relying party; and the same bytes
//! through every binary parser (`tapgate_webauthn::fuzz::parsers`: client
//! data, authenticator data, attestation object, COSE key, certificates,
//! DER, PEM trust anchors, base64url).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};
use tapgate_webauthn::{
    AuthenticationResponseJson, RegistrationResponseJson, RelyingParty, StoredCredential,
    UserVerification, fuzz, verify_authentication, verify_registration,
};

fuzz_target!(|data: &[u8]| {
    fuzz::parsers(data);

    let rp = RelyingParty {
        id: "localhost".into(),
        origins: vec!["http://localhost:8080".into()],
        user_verification: UserVerification::Preferred,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_748_736_000);
    if let Ok(reg) = serde_json::from_slice::<RegistrationResponseJson>(data) {
        let _ = reg.credential_id();
        let _ = verify_registration(&rp, b"fuzz-challenge", &reg, now);
        // What tapgate echoes back must serialise again.
        let _ = serde_json::to_vec(&reg).expect("a parsed response serialises");
    }
    if let Ok(auth) = serde_json::from_slice::<AuthenticationResponseJson>(data) {
        let _ = auth.user_handle();
        if let Ok(id) = auth.credential_id() {
            // A stored ES256 key (the W3C packed-es256 vector's credential) under
            // the id the response claims: reaches the signature check.
            let key = tapgate_webauthn::base64url_decode(
                "pQECAyYgASFYIBzyfyXaWRIIpCOcLjJPEE9YVSVHmint7t2DD0jneurlIlggWeS32mwBBuIGzjkMk6uYoVpew4h-V_DMK-zoA7kgxCM",
            )
            .unwrap_or_default();
            let stored = StoredCredential {
                id: &id,
                public_key: &key,
                sign_count: 0,
                backup_eligible: false,
            };
            let _ = verify_authentication(&rp, b"fuzz-challenge", &auth, &stored, now);
        }
    }
});
