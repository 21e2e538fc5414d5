//! `CollectedClientData` (WebAuthn L3 §5.8.1): the JSON the browser writes about the ceremony,
//! and the checks of §7.1 steps 7–11 / §7.2 steps 10–14.

use aws_lc_rs::constant_time;
use serde::Deserialize;

use crate::{Error, RelyingParty, base64url};

/// Which ceremony a clientDataJSON must describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ceremony {
    Create,
    Get,
}

impl Ceremony {
    fn type_str(self) -> &'static str {
        match self {
            Ceremony::Create => "webauthn.create",
            Ceremony::Get => "webauthn.get",
        }
    }
}

/// The members we check. Unknown members are ignored, as the spec requires (clients may extend
/// the dictionary). A repeated known member is refused by serde rather than silently letting
/// the last one win.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CollectedClientData {
    r#type: String,
    challenge: String,
    origin: String,
    #[serde(default)]
    cross_origin: Option<bool>,
    #[serde(default)]
    top_origin: Option<serde_json::Value>,
}

/// Parses clientDataJSON and checks it against the ceremony, the issued challenge and the site.
pub(crate) fn verify(
    raw: &[u8],
    ceremony: Ceremony,
    expected_challenge: &[u8],
    rp: &RelyingParty,
) -> Result<(), Error> {
    // The spec's "UTF-8 decode" step. Checked on the whole input first: serde_json does not
    // check the UTF-8 of members it skips, so it alone would let invalid bytes through.
    let text = std::str::from_utf8(raw).map_err(|_| Error::ClientDataMalformed {
        detail: "not UTF-8".to_string(),
    })?;
    let c: CollectedClientData =
        serde_json::from_str(text).map_err(|e| Error::ClientDataMalformed {
            detail: match e.classify() {
                serde_json::error::Category::Data => "a required member is missing or mistyped",
                _ => "not JSON",
            }
            .to_string(),
        })?;

    if c.r#type != ceremony.type_str() {
        return Err(Error::ClientDataTypeWrong {
            expected: ceremony.type_str(),
            found: c.r#type,
        });
    }

    // The spec compares the base64url encoding of the issued challenge with the string the
    // browser wrote; comparing strings (not decoded bytes) refuses non-canonical spellings.
    // Constant time so the comparison leaks nothing about a challenge still in flight.
    let expected = base64url(expected_challenge);
    if constant_time::verify_slices_are_equal(expected.as_bytes(), c.challenge.as_bytes()).is_err()
    {
        return Err(Error::ChallengeMismatch);
    }

    if !rp.origins.contains(&c.origin) {
        return Err(Error::OriginMismatch {
            found: c.origin,
            allowed: rp.origins.clone(),
        });
    }

    // tapgate never allows its ceremonies inside another site's frame: a cross-origin iframe
    // could be a clickjacking page. Checked at both ceremonies (some libraries forget the
    // second one).
    if let Some(top) = c.top_origin.filter(|v| !v.is_null()) {
        return Err(Error::TopOriginRefused {
            top_origin: top
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| top.to_string()),
        });
    }
    if c.cross_origin == Some(true) {
        return Err(Error::CrossOriginRefused);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserVerification;

    fn rp() -> RelyingParty {
        RelyingParty {
            id: "example.org".into(),
            origins: vec!["https://example.org".into()],
            user_verification: UserVerification::Preferred,
        }
    }

    const CHALLENGE: &[u8] = b"challenge-bytes";

    fn json(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"https://example.org"{extra}}}"#,
            base64url(CHALLENGE)
        )
        .into_bytes()
    }

    fn check(raw: &[u8]) -> Result<(), Error> {
        verify(raw, Ceremony::Get, CHALLENGE, &rp())
    }

    #[test]
    fn accepts_well_formed_client_data() {
        check(&json("")).unwrap();
        check(&json(r#","crossOrigin":false,"extraData":"anything""#)).unwrap();
        check(&json(r#","topOrigin":null"#)).unwrap();
    }

    #[test]
    fn refuses_wrong_ceremony_type() {
        let e = verify(&json(""), Ceremony::Create, CHALLENGE, &rp()).unwrap_err();
        assert_eq!(e.reason(), "client-data-type-wrong");
    }

    #[test]
    fn refuses_other_challenge_and_non_canonical_spelling() {
        let e = verify(&json(""), Ceremony::Get, b"other", &rp()).unwrap_err();
        assert_eq!(e.reason(), "challenge-mismatch");
        let padded = format!(
            r#"{{"type":"webauthn.get","challenge":"{}=","origin":"https://example.org"}}"#,
            base64url(CHALLENGE)
        );
        assert_eq!(
            check(padded.as_bytes()).unwrap_err().reason(),
            "challenge-mismatch"
        );
    }

    #[test]
    fn refuses_foreign_origin_with_actionable_message() {
        let raw = format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"https://evil.example"}}"#,
            base64url(CHALLENGE)
        );
        let e = check(raw.as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "origin-mismatch");
        assert!(e.to_string().contains("https://evil.example"));
        assert!(e.to_string().contains("https://example.org"));
    }

    #[test]
    fn refuses_embedding() {
        assert_eq!(
            check(&json(r#","crossOrigin":true"#)).unwrap_err().reason(),
            "cross-origin-refused"
        );
        assert_eq!(
            check(&json(
                r#","crossOrigin":true,"topOrigin":"https://example.com""#
            ))
            .unwrap_err()
            .reason(),
            "top-origin-refused"
        );
        // A topOrigin alone (without crossOrigin) is just as refused.
        assert_eq!(
            check(&json(r#","topOrigin":"https://example.com""#))
                .unwrap_err()
                .reason(),
            "top-origin-refused"
        );
    }

    #[test]
    fn refuses_malformed_json() {
        for raw in [
            &b""[..],
            b"[]",
            b"{}",
            b"\xff\xfe",
            // Invalid UTF-8 inside a member the verifier otherwise ignores.
            b"{\"type\":\"webauthn.get\",\"challenge\":\"Y2hhbGxlbmdlLWJ5dGVz\",\"origin\":\"https://example.org\",\"x\":\"\xc3\x28\"}",
            br#"{"type":"webauthn.get"}"#,
            br#"{"type":1,"challenge":"x","origin":"y"}"#,
        ] {
            assert_eq!(
                check(raw).unwrap_err().reason(),
                "client-data-malformed",
                "{raw:?}"
            );
        }
        // A repeated member is refused instead of letting the last one win.
        let dup = json(r#","origin":"https://evil.example""#);
        assert_eq!(check(&dup).unwrap_err().reason(), "client-data-malformed");
        // crossOrigin must be a boolean.
        assert_eq!(
            check(&json(r#","crossOrigin":"false""#))
                .unwrap_err()
                .reason(),
            "client-data-malformed"
        );
    }
}
