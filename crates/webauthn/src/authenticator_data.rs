//! Authenticator data (WebAuthn L3 §6.1): the authenticator's own signed record of a ceremony.
//!
//! ```text
//! rpIdHash(32) flags(1) signCount(4) [attestedCredentialData] [extensions]
//! attestedCredentialData = aaguid(16) credentialIdLength(2, big-endian) credentialId COSE_Key
//! ```
//! The COSE_Key and the extensions are CBOR items of unstated length, so the parser reads one
//! item and measures what it consumed. Truncated input and trailing bytes are refused: the
//! bytes we store must be exactly the bytes the authenticator signed.

use aws_lc_rs::digest;

use crate::{Error, Flags, RelyingParty, UserVerification};

const FLAG_UP: u8 = 1 << 0;
const FLAG_UV: u8 = 1 << 2;
const FLAG_BE: u8 = 1 << 3;
const FLAG_BS: u8 = 1 << 4;
const FLAG_AT: u8 = 1 << 6;
const FLAG_ED: u8 = 1 << 7;

/// WebAuthn L3 §5.1 (`rawId`) caps credential ids at 1023 bytes.
pub(crate) const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// Parsed authenticator data, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatorData<'a> {
    pub rp_id_hash: &'a [u8],
    pub flags: Flags,
    pub sign_count: u32,
    pub attested: Option<AttestedCredentialData<'a>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AttestedCredentialData<'a> {
    pub aaguid: [u8; 16],
    pub credential_id: &'a [u8],
    /// The COSE_Key exactly as the authenticator encoded it.
    pub public_key: &'a [u8],
}

fn malformed(detail: &str) -> Error {
    Error::AuthenticatorDataMalformed {
        detail: detail.to_string(),
    }
}

/// Splits `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], Error> {
    if rest.len() < n {
        return Err(malformed(&format!("truncated in the {what}")));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Splits one CBOR data item off the front of `rest` and returns its bytes and value.
pub(crate) fn take_cbor_item<'a>(
    rest: &mut &'a [u8],
) -> Result<(&'a [u8], ciborium::Value), String> {
    let start = *rest;
    // ciborium reads exactly one item from a `&[u8]` reader (no read-ahead), so what it left
    // unread tells us where the item ended. Its recursion limit bounds nesting depth.
    let value: ciborium::Value = ciborium::de::from_reader(&mut *rest).map_err(|e| match e {
        ciborium::de::Error::Io(_) => "truncated CBOR".to_string(),
        ciborium::de::Error::RecursionLimitExceeded => "CBOR nested too deeply".to_string(),
        _ => "invalid CBOR".to_string(),
    })?;
    let used = start.len() - rest.len();
    Ok((start.get(..used).unwrap_or_default(), value))
}

impl<'a> AuthenticatorData<'a> {
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self, Error> {
        let mut rest = raw;
        let rp_id_hash = take(&mut rest, 32, "RP id hash")?;
        let flags_byte = take(&mut rest, 1, "flags")?
            .first()
            .copied()
            .unwrap_or_default();
        let count = take(&mut rest, 4, "signature counter")?;
        let sign_count = u32::from_be_bytes(count.try_into().map_err(|_| malformed("counter"))?);

        let attested = if flags_byte & FLAG_AT != 0 {
            let aaguid: [u8; 16] = take(&mut rest, 16, "AAGUID")?
                .try_into()
                .map_err(|_| malformed("AAGUID"))?;
            let len_bytes = take(&mut rest, 2, "credential id length")?;
            let len = usize::from(u16::from_be_bytes(
                len_bytes
                    .try_into()
                    .map_err(|_| malformed("credential id length"))?,
            ));
            if len > MAX_CREDENTIAL_ID_LEN {
                return Err(Error::CredentialIdTooLong { len });
            }
            let credential_id = take(&mut rest, len, "credential id")?;
            let (public_key, _) = take_cbor_item(&mut rest)
                .map_err(|d| malformed(&format!("credential public key: {d}")))?;
            Some(AttestedCredentialData {
                aaguid,
                credential_id,
                public_key,
            })
        } else {
            None
        };

        if flags_byte & FLAG_ED != 0 {
            // Extension outputs are a CBOR map. We use none of them, but they are signed data,
            // so they must be well-formed and account for every remaining byte.
            let (_, value) =
                take_cbor_item(&mut rest).map_err(|d| malformed(&format!("extensions: {d}")))?;
            if !value.is_map() {
                return Err(malformed("extensions are not a CBOR map"));
            }
        }
        if !rest.is_empty() {
            return Err(malformed(&format!(
                "{} unexpected bytes after the {}",
                rest.len(),
                if flags_byte & FLAG_ED != 0 {
                    "extensions"
                } else if flags_byte & FLAG_AT != 0 {
                    "credential public key (or extensions without the ED flag)"
                } else {
                    "signature counter (attested data or extensions without their flag)"
                }
            )));
        }

        Ok(AuthenticatorData {
            rp_id_hash,
            flags: Flags {
                up: flags_byte & FLAG_UP != 0,
                uv: flags_byte & FLAG_UV != 0,
                be: flags_byte & FLAG_BE != 0,
                bs: flags_byte & FLAG_BS != 0,
            },
            sign_count,
            attested,
        })
    }

    /// The checks both ceremonies share (§7.1 steps 13–17, §7.2 steps 15–19).
    pub(crate) fn verify_policy(&self, rp: &RelyingParty) -> Result<(), Error> {
        let expected = digest::digest(&digest::SHA256, rp.id.as_bytes());
        if self.rp_id_hash != expected.as_ref() {
            return Err(Error::RpIdMismatch {
                expected: rp.id.clone(),
            });
        }
        // tapgate never runs conditional ("silent") creation, so presence is always required.
        if !self.flags.up {
            return Err(Error::UserNotPresent);
        }
        if rp.user_verification == UserVerification::Required && !self.flags.uv {
            return Err(Error::UserNotVerified);
        }
        // §6.1.3: a credential that is not backup eligible cannot be backed up.
        if self.flags.bs && !self.flags.be {
            return Err(Error::BackupStateInvalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(uv: UserVerification) -> RelyingParty {
        RelyingParty {
            id: "localhost".into(),
            origins: vec!["http://localhost:8080".into()],
            user_verification: uv,
        }
    }

    fn header(flags: u8, count: u32) -> Vec<u8> {
        let mut v = digest::digest(&digest::SHA256, b"localhost")
            .as_ref()
            .to_vec();
        v.push(flags);
        v.extend_from_slice(&count.to_be_bytes());
        v
    }

    // A P-256 COSE_Key {1:2, 3:-7, -1:1, -2:x, -3:y} with dummy coordinates: the parser only
    // measures it.
    fn cose_key() -> Vec<u8> {
        let mut k = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
        k.extend_from_slice(&[7; 32]);
        k.extend_from_slice(&[0x22, 0x58, 0x20]);
        k.extend_from_slice(&[9; 32]);
        k
    }

    fn attested(flags: u8, cred_id: &[u8]) -> Vec<u8> {
        let mut v = header(flags | FLAG_AT, 5);
        v.extend_from_slice(&[0xaa; 16]);
        v.extend_from_slice(&(cred_id.len() as u16).to_be_bytes());
        v.extend_from_slice(cred_id);
        v.extend_from_slice(&cose_key());
        v
    }

    #[test]
    fn parses_assertion_data() {
        let raw = header(FLAG_UP | FLAG_UV | FLAG_BE, 0x0102_0304);
        let ad = AuthenticatorData::parse(&raw).unwrap();
        assert_eq!(ad.sign_count, 0x0102_0304);
        assert_eq!(
            ad.flags,
            Flags {
                up: true,
                uv: true,
                be: true,
                bs: false
            }
        );
        assert!(ad.attested.is_none());
        ad.verify_policy(&rp(UserVerification::Required)).unwrap();
    }

    #[test]
    fn parses_attested_data_and_measures_the_key() {
        let raw = attested(FLAG_UP, b"cred");
        let ad = AuthenticatorData::parse(&raw).unwrap();
        let at = ad.attested.unwrap();
        assert_eq!(at.credential_id, b"cred");
        assert_eq!(at.public_key, cose_key().as_slice());
        assert_eq!(at.aaguid, [0xaa; 16]);
    }

    #[test]
    fn extensions_need_the_ed_flag_and_must_be_a_map() {
        let mut raw = attested(FLAG_UP | FLAG_ED, b"c");
        raw.extend_from_slice(&[0xa1, 0x61, 0x78, 0xf5]); // {"x": true}
        AuthenticatorData::parse(&raw).unwrap();

        let mut no_flag = attested(FLAG_UP, b"c");
        no_flag.extend_from_slice(&[0xa1, 0x61, 0x78, 0xf5]);
        assert_eq!(
            AuthenticatorData::parse(&no_flag).unwrap_err().reason(),
            "authenticator-data-malformed"
        );

        let mut not_map = header(FLAG_UP | FLAG_ED, 0);
        not_map.push(0x01);
        assert!(AuthenticatorData::parse(&not_map).is_err());
        // ED set but nothing there.
        assert!(AuthenticatorData::parse(&header(FLAG_UP | FLAG_ED, 0)).is_err());
    }

    #[test]
    fn refuses_truncation_and_trailing_bytes() {
        let raw = attested(FLAG_UP, b"cred");
        for cut in 0..raw.len() {
            assert!(
                AuthenticatorData::parse(&raw[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = raw.clone();
        long.push(0);
        assert!(AuthenticatorData::parse(&long).is_err());
        let mut assertion = header(FLAG_UP, 1);
        assertion.push(0);
        assert!(AuthenticatorData::parse(&assertion).is_err());
    }

    #[test]
    fn credential_id_length_is_capped() {
        AuthenticatorData::parse(&attested(FLAG_UP, &[1; 1023])).unwrap();
        let e = AuthenticatorData::parse(&attested(FLAG_UP, &[1; 1024])).unwrap_err();
        assert_eq!(e.reason(), "credential-id-too-long");
    }

    #[test]
    fn policy_checks() {
        let check = |flags: u8, uv: UserVerification| {
            AuthenticatorData::parse(&header(flags, 0))
                .unwrap()
                .verify_policy(&rp(uv))
        };
        assert_eq!(
            check(0, UserVerification::Discouraged)
                .unwrap_err()
                .reason(),
            "user-not-present"
        );
        assert_eq!(
            check(FLAG_UP, UserVerification::Required)
                .unwrap_err()
                .reason(),
            "user-not-verified"
        );
        check(FLAG_UP, UserVerification::Preferred).unwrap();
        assert_eq!(
            check(FLAG_UP | FLAG_BS, UserVerification::Preferred)
                .unwrap_err()
                .reason(),
            "backup-state-invalid"
        );
        check(FLAG_UP | FLAG_BS | FLAG_BE, UserVerification::Preferred).unwrap();

        let mut other_rp = header(FLAG_UP, 0);
        other_rp[0] ^= 1;
        let e = AuthenticatorData::parse(&other_rp)
            .unwrap()
            .verify_policy(&rp(UserVerification::Preferred))
            .unwrap_err();
        assert_eq!(e.reason(), "rp-id-mismatch");
    }
}
