//! The WebAuthn Level 3 JSON encodings of ceremony responses (`RegistrationResponseJSON`,
//! `AuthenticationResponseJSON`) and the base64url helpers they need.
//!
//! These are what `PublicKeyCredential.toJSON()`, SimpleWebAuthn's browser package and
//! python-fido2 send. Unknown members are ignored (browsers add new ones), binary members stay
//! base64url strings here and are decoded by the verification functions, so a bad encoding is
//! reported with the field's name.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use crate::Error;

/// base64url without padding, as WebAuthn's JSON encodings use.
const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

/// base64url, padding optional. Padded input costs nothing to accept (some libraries' fixtures
/// pad). The standard `+/` alphabet is never accepted: mixing alphabets would give one value
/// two spellings. Non-zero trailing bits are refused for the same reason.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as base64url without padding.
pub fn base64url(bytes: &[u8]) -> String {
    ENCODER.encode(bytes)
}

/// Decodes base64url, with or without padding; refuses the standard `+/` alphabet.
pub fn base64url_decode(s: &str) -> Result<Vec<u8>, Error> {
    decode_field(s, "value")
}

pub(crate) fn decode_field(s: &str, field: &'static str) -> Result<Vec<u8>, Error> {
    DECODER
        .decode(s)
        .map_err(|_| Error::Base64Invalid { field })
}

/// `RegistrationResponseJSON`: what the browser returns from `navigator.credentials.create()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResponseJson {
    pub id: String,
    pub raw_id: String,
    pub r#type: String,
    pub response: AuthenticatorAttestationResponseJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_attachment: Option<String>,
    #[serde(default)]
    pub client_extension_results: serde_json::Value,
}

/// `AuthenticatorAttestationResponseJSON`.
///
/// `authenticator_data`, `public_key` and `public_key_algorithm` are convenience copies that
/// L3 browsers add; verification ignores them and reads the attestation object, the only copy
/// an attestation signature covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatorAttestationResponseJson {
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    pub attestation_object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_algorithm: Option<i64>,
}

/// `AuthenticationResponseJSON`: what the browser returns from `navigator.credentials.get()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationResponseJson {
    pub id: String,
    pub raw_id: String,
    pub r#type: String,
    pub response: AuthenticatorAssertionResponseJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_attachment: Option<String>,
    #[serde(default)]
    pub client_extension_results: serde_json::Value,
}

/// `AuthenticatorAssertionResponseJSON`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatorAssertionResponseJson {
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    pub authenticator_data: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
}

impl RegistrationResponseJson {
    /// The credential id the browser claims (`rawId`), decoded. Verification checks it
    /// against the authenticator's data; before that it is only a claim.
    pub fn credential_id(&self) -> Result<Vec<u8>, Error> {
        decode_field(&self.raw_id, "rawId")
    }
}

impl AuthenticationResponseJson {
    /// The credential id the browser claims (`rawId`), decoded: the key to look the stored
    /// credential up by before calling [`crate::verify_authentication`].
    pub fn credential_id(&self) -> Result<Vec<u8>, Error> {
        decode_field(&self.raw_id, "rawId")
    }

    /// The user handle of a discoverable credential, decoded; `None` when absent or empty.
    pub fn user_handle(&self) -> Result<Option<Vec<u8>>, Error> {
        match self.response.user_handle.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => decode_field(s, "userHandle").map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_without_padding() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let s = base64url(&bytes);
            assert!(!s.contains('=') && !s.contains('+') && !s.contains('/'));
            assert_eq!(base64url_decode(&s).unwrap(), bytes);
        }
    }

    #[test]
    fn padded_base64url_is_accepted() {
        assert_eq!(base64url_decode("kAA=").unwrap(), vec![0x90, 0]);
        assert_eq!(base64url_decode("kAA").unwrap(), vec![0x90, 0]);
    }

    #[test]
    fn standard_alphabet_and_junk_are_refused() {
        assert!(base64url_decode("a+b/").is_err());
        assert!(base64url_decode("ab cd").is_err());
        assert!(base64url_decode("a").is_err());
        // Non-canonical: trailing bits set.
        assert!(base64url_decode("kAB").is_err());
        assert_eq!(base64url_decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn decodes_browser_json_shape() {
        let j = r#"{"id":"AAE","rawId":"AAE","type":"public-key","authenticatorAttachment":"platform",
            "response":{"clientDataJSON":"e30","attestationObject":"oA","transports":["internal"],
            "publicKeyAlgorithm":-7,"somethingNew":1},"clientExtensionResults":{}}"#;
        let r: RegistrationResponseJson = serde_json::from_str(j).unwrap();
        assert_eq!(r.credential_id().unwrap(), vec![0, 1]);
        assert_eq!(
            r.response.transports.as_deref(),
            Some(&["internal".to_string()][..])
        );
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["response"]["clientDataJSON"], "e30");
        assert_eq!(back["rawId"], "AAE");

        let j = r#"{"id":"AAE","rawId":"AAE","type":"public-key",
            "response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA","userHandle":"dXNlcg"}}"#;
        let a: AuthenticationResponseJson = serde_json::from_str(j).unwrap();
        assert_eq!(a.user_handle().unwrap(), Some(b"user".to_vec()));
        assert_eq!(a.client_extension_results, serde_json::Value::Null);
    }
}
