//! Credential public keys: COSE_Key (RFC 9052 §7, RFC 9053) to a validated aws-lc-rs key.
//!
//! Each supported algorithm pins its key type, curve and coordinate sizes, so a key that says
//! "ES256" but carries a P-384 point (or an OKP key) is refused instead of being verified with
//! whatever the key happens to be. Keys are validated when they are parsed, so a registration
//! never stores a key that can not verify anything (not on the curve, RSA too small).

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use coset::iana::{self, EnumI64 as _};
use coset::{CborSerializable as _, CoseKey, KeyType, Label, RegisteredLabelWithPrivate};
use x509_cert::der::asn1::UintRef;
use x509_cert::der::{Encode as _, Header, Length, Tag};

use crate::Error;

/// The COSE algorithms tapgate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 (-7).
    Es256,
    /// ECDSA P-384 with SHA-384 (-35).
    Es384,
    /// ECDSA P-521 with SHA-512 (-36).
    Es512,
    /// EdDSA with Ed25519 (-8).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (-257).
    Rs256,
    /// RSASSA-PSS with SHA-256 (-37).
    Ps256,
}

impl Alg {
    /// Every supported algorithm, in the order a server would offer them.
    pub const ALL: [Alg; 6] = [
        Alg::Es256,
        Alg::EdDsa,
        Alg::Es384,
        Alg::Es512,
        Alg::Ps256,
        Alg::Rs256,
    ];

    pub fn from_cose(id: i64) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.cose() == id)
    }

    /// The COSE algorithm identifier.
    pub fn cose(self) -> i64 {
        match self {
            Alg::Es256 => -7,
            Alg::Es384 => -35,
            Alg::Es512 => -36,
            Alg::EdDsa => -8,
            Alg::Rs256 => -257,
            Alg::Ps256 => -37,
        }
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Alg::Es256 => &signature::ECDSA_P256_SHA256_ASN1,
            Alg::Es384 => &signature::ECDSA_P384_SHA384_ASN1,
            Alg::Es512 => &signature::ECDSA_P521_SHA512_ASN1,
            Alg::EdDsa => &signature::ED25519,
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        }
    }
}

/// A validated public key and the one algorithm it may be used with.
#[derive(Debug)]
pub(crate) struct PublicKey {
    alg: Alg,
    key: ParsedPublicKey,
    /// For EC2 keys, the uncompressed SEC1 point (fido-u2f signs over it).
    sec1_point: Option<Vec<u8>>,
    /// The key's numbers as the COSE_Key gave them (absent for keys read from certificates):
    /// attestation formats compare them with the key an attestation vouches for.
    components: Option<KeyComponents>,
}

/// The numbers of a credential public key, leading zero bytes of RSA integers stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyComponents {
    /// An EC2 key: COSE curve (1 = P-256, 2 = P-384, 3 = P-521) and fixed-size coordinates.
    Ec2 { crv: i64, x: Vec<u8>, y: Vec<u8> },
    /// An Ed25519 key.
    Ed25519 { x: Vec<u8> },
    /// An RSA key: modulus and public exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// Big-endian integer bytes without leading zeros (an all-zero value becomes empty).
pub(crate) fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::PublicKeyMalformed {
        detail: detail.into(),
    }
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::PublicKeyInvalid {
        detail: detail.into(),
    }
}

/// Looks a key parameter up by its integer label; coset has already refused duplicates.
fn param(key: &CoseKey, label: i64) -> Option<&ciborium::Value> {
    key.params
        .iter()
        .find(|(l, _)| *l == Label::Int(label))
        .map(|(_, v)| v)
}

fn bytes_param<'k>(key: &'k CoseKey, label: i64, name: &str) -> Result<&'k [u8], Error> {
    match param(key, label) {
        Some(ciborium::Value::Bytes(b)) => Ok(b),
        Some(_) => Err(malformed(format!("{name} is not a byte string"))),
        None => Err(malformed(format!("{name} is missing"))),
    }
}

fn int_param(key: &CoseKey, label: i64, name: &str) -> Result<i64, Error> {
    match param(key, label) {
        Some(ciborium::Value::Integer(i)) => {
            i64::try_from(*i).map_err(|_| malformed(format!("{name} is out of range")))
        }
        Some(_) => Err(malformed(format!("{name} is not an integer"))),
        None => Err(malformed(format!("{name} is missing"))),
    }
}

/// Peeks at the `alg` label (3) before coset parses the key, so an algorithm coset does not
/// know still gets the precise "unsupported algorithm" answer.
fn peek_alg(cose_key: &[u8]) -> Option<i64> {
    let mut rest = cose_key;
    let value: ciborium::Value = ciborium::de::from_reader(&mut rest).ok()?;
    value.as_map()?.iter().find_map(|(k, v)| {
        let k = i64::try_from(k.as_integer()?).ok()?;
        if k == 3 {
            i64::try_from(v.as_integer()?).ok()
        } else {
            None
        }
    })
}

impl PublicKey {
    /// Parses and validates a credential public key (COSE_Key bytes, nothing after them).
    pub(crate) fn from_cose(cose_key: &[u8]) -> Result<PublicKey, Error> {
        if let Some(id) = peek_alg(cose_key)
            && Alg::from_cose(id).is_none()
        {
            return Err(Error::AlgorithmUnsupported { alg: Some(id) });
        }
        let key = CoseKey::from_slice(cose_key).map_err(|e| malformed(e.to_string()))?;
        let alg = match &key.alg {
            Some(RegisteredLabelWithPrivate::Assigned(a)) => {
                Alg::from_cose(a.to_i64()).ok_or(Error::AlgorithmUnsupported {
                    alg: Some(a.to_i64()),
                })?
            }
            Some(RegisteredLabelWithPrivate::PrivateUse(id)) => {
                return Err(Error::AlgorithmUnsupported { alg: Some(*id) });
            }
            Some(RegisteredLabelWithPrivate::Text(_)) => {
                return Err(Error::AlgorithmUnsupported { alg: None });
            }
            // WebAuthn §6.5.1: the credential public key MUST name its algorithm.
            None => return Err(malformed("the alg parameter is missing")),
        };

        let expect_kty = |kty: iana::KeyType| {
            if key.kty == KeyType::Assigned(kty) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "key type {:?} does not fit {alg:?}",
                    key.kty
                )))
            }
        };

        match alg {
            Alg::Es256 | Alg::Es384 | Alg::Es512 => {
                expect_kty(iana::KeyType::EC2)?;
                let (crv, size) = match alg {
                    Alg::Es256 => (iana::EllipticCurve::P_256, 32),
                    Alg::Es384 => (iana::EllipticCurve::P_384, 48),
                    _ => (iana::EllipticCurve::P_521, 66),
                };
                let found = int_param(&key, iana::Ec2KeyParameter::Crv.to_i64(), "crv")?;
                if found != crv.to_i64() {
                    return Err(invalid(format!("curve {found} does not fit {alg:?}")));
                }
                let x = bytes_param(&key, iana::Ec2KeyParameter::X.to_i64(), "x")?;
                // A boolean y (point compression) is refused: WebAuthn keys are uncompressed.
                let y = bytes_param(&key, iana::Ec2KeyParameter::Y.to_i64(), "y")?;
                if x.len() != size || y.len() != size {
                    return Err(invalid(format!("coordinates are not {size} bytes")));
                }
                let point = [&[0x04], x, y].concat();
                let parsed = ParsedPublicKey::new(alg.verification(), &point)
                    .map_err(|_| invalid("the point is not on the curve"))?;
                Ok(PublicKey {
                    alg,
                    key: parsed,
                    sec1_point: Some(point),
                    components: Some(KeyComponents::Ec2 {
                        crv: found,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    }),
                })
            }
            Alg::EdDsa => {
                expect_kty(iana::KeyType::OKP)?;
                let crv = int_param(&key, iana::OkpKeyParameter::Crv.to_i64(), "crv")?;
                if crv == iana::EllipticCurve::Ed448.to_i64() {
                    // Same error as alg -53: Ed448 is simply not offered.
                    return Err(Error::AlgorithmUnsupported {
                        alg: Some(alg.cose()),
                    });
                }
                if crv != iana::EllipticCurve::Ed25519.to_i64() {
                    return Err(invalid(format!("curve {crv} does not fit EdDSA")));
                }
                let x = bytes_param(&key, iana::OkpKeyParameter::X.to_i64(), "x")?;
                if x.len() != 32 {
                    return Err(invalid("an Ed25519 key is 32 bytes"));
                }
                let parsed = ParsedPublicKey::new(alg.verification(), x)
                    .map_err(|_| invalid("not an Ed25519 point"))?;
                Ok(PublicKey {
                    alg,
                    key: parsed,
                    sec1_point: None,
                    components: Some(KeyComponents::Ed25519 { x: x.to_vec() }),
                })
            }
            Alg::Rs256 | Alg::Ps256 => {
                expect_kty(iana::KeyType::RSA)?;
                let n = bytes_param(&key, iana::RsaKeyParameter::N.to_i64(), "n")?;
                let e = bytes_param(&key, iana::RsaKeyParameter::E.to_i64(), "e")?;
                let der = rsa_public_key_der(n, e).ok_or_else(|| invalid("bad RSA modulus"))?;
                let parsed = ParsedPublicKey::new(alg.verification(), &der)
                    .map_err(|_| invalid("not a usable RSA key (at least 2048 bits)"))?;
                Ok(PublicKey {
                    alg,
                    key: parsed,
                    sec1_point: None,
                    components: Some(KeyComponents::Rsa {
                        n: strip_leading_zeros(n).to_vec(),
                        e: strip_leading_zeros(e).to_vec(),
                    }),
                })
            }
        }
    }

    /// A key from an X.509 SubjectPublicKeyInfo (attestation certificates), to be used with
    /// `alg`. aws-lc-rs refuses an SPKI of another key type or curve than `alg` needs.
    pub(crate) fn from_spki(spki_der: &[u8], alg: Alg) -> Result<PublicKey, ()> {
        let key = ParsedPublicKey::new(alg.verification(), spki_der).map_err(|_| ())?;
        Ok(PublicKey {
            alg,
            key,
            sec1_point: None,
            components: None,
        })
    }

    /// The key's numbers, for keys parsed from a COSE_Key.
    pub(crate) fn components(&self) -> Option<&KeyComponents> {
        self.components.as_ref()
    }

    pub(crate) fn alg(&self) -> Alg {
        self.alg
    }

    pub(crate) fn sec1_point(&self) -> Option<&[u8]> {
        self.sec1_point.as_deref()
    }

    /// Verifies `signature` over `message`. ECDSA signatures are ASN.1 DER, as WebAuthn sends
    /// them; an empty signature is refused before it reaches the library.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), ()> {
        if signature.is_empty() {
            return Err(());
        }
        self.key.verify_sig(message, signature).map_err(|_| ())
    }
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017),
/// the form aws-lc-rs parses. COSE carries n and e as unsigned big-endian byte strings.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Option<Vec<u8>> {
    let n = UintRef::new(n).ok()?.to_der().ok()?;
    let e = UintRef::new(e).ok()?.to_der().ok()?;
    let len = Length::try_from(n.len().checked_add(e.len())?).ok()?;
    let mut out = Header::new(Tag::Sequence, len).ok()?.to_der().ok()?;
    out.extend_from_slice(&n);
    out.extend_from_slice(&e);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

    fn cbor(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn int(i: i64) -> ciborium::Value {
        ciborium::Value::Integer(i.into())
    }

    fn ec2(alg: i64, crv: i64, x: &[u8], y: &[u8]) -> Vec<u8> {
        cbor(&ciborium::Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(alg)),
            (int(-1), int(crv)),
            (int(-2), ciborium::Value::Bytes(x.to_vec())),
            (int(-3), ciborium::Value::Bytes(y.to_vec())),
        ]))
    }

    fn p256_pair() -> (EcdsaKeyPair, Vec<u8>) {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let key = ec2(-7, 1, &point[1..33], &point[33..65]);
        (pair, key)
    }

    #[test]
    fn es256_key_verifies_its_signatures() {
        let (pair, key) = p256_pair();
        let pk = PublicKey::from_cose(&key).unwrap();
        assert_eq!(pk.alg(), Alg::Es256);
        let sig = pair.sign(&SystemRandom::new(), b"message").unwrap();
        pk.verify(b"message", sig.as_ref()).unwrap();
        assert!(pk.verify(b"other", sig.as_ref()).is_err());
        assert!(pk.verify(b"message", &[]).is_err());
        // r = s = 0 (CVE-2022-21449 class): SEQUENCE { INTEGER 0, INTEGER 0 }.
        assert!(
            pk.verify(
                b"message",
                &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]
            )
            .is_err()
        );
    }

    #[test]
    fn curve_must_fit_the_algorithm() {
        let (_, key) = p256_pair();
        let v: ciborium::Value = ciborium::de::from_reader(key.as_slice()).unwrap();
        let m = v.as_map().unwrap();
        let x = m[3].1.as_bytes().unwrap();
        let y = m[4].1.as_bytes().unwrap();
        // ES256 naming P-384.
        let e = PublicKey::from_cose(&ec2(-7, 2, x, y)).unwrap_err();
        assert_eq!(e.reason(), "public-key-invalid");
        // ES384 with a P-256 point.
        assert_eq!(
            PublicKey::from_cose(&ec2(-35, 2, x, y))
                .unwrap_err()
                .reason(),
            "public-key-invalid"
        );
        // Point off the curve.
        let mut bad_y = y.clone();
        bad_y[31] ^= 1;
        assert_eq!(
            PublicKey::from_cose(&ec2(-7, 1, x, &bad_y))
                .unwrap_err()
                .reason(),
            "public-key-invalid"
        );
        // OKP key type with an ECDSA algorithm.
        let okp = cbor(&ciborium::Value::Map(vec![
            (int(1), int(1)),
            (int(3), int(-7)),
            (int(-1), int(6)),
            (int(-2), ciborium::Value::Bytes(vec![0; 32])),
        ]));
        assert_eq!(
            PublicKey::from_cose(&okp).unwrap_err().reason(),
            "public-key-invalid"
        );
    }

    #[test]
    fn ed25519_key_verifies_and_ed448_is_unsupported() {
        let pair = Ed25519KeyPair::generate().unwrap();
        let key = cbor(&ciborium::Value::Map(vec![
            (int(1), int(1)),
            (int(3), int(-8)),
            (int(-1), int(6)),
            (
                int(-2),
                ciborium::Value::Bytes(pair.public_key().as_ref().to_vec()),
            ),
        ]));
        let pk = PublicKey::from_cose(&key).unwrap();
        pk.verify(b"m", pair.sign(b"m").as_ref()).unwrap();

        let ed448 = cbor(&ciborium::Value::Map(vec![
            (int(1), int(1)),
            (int(3), int(-8)),
            (int(-1), int(7)),
            (int(-2), ciborium::Value::Bytes(vec![1; 57])),
        ]));
        assert_eq!(
            PublicKey::from_cose(&ed448).unwrap_err().reason(),
            "algorithm-unsupported"
        );
        let alg_53 = cbor(&ciborium::Value::Map(vec![
            (int(1), int(1)),
            (int(3), int(-53)),
            (int(-1), int(7)),
            (int(-2), ciborium::Value::Bytes(vec![1; 57])),
        ]));
        let e = PublicKey::from_cose(&alg_53).unwrap_err();
        assert_eq!(e, Error::AlgorithmUnsupported { alg: Some(-53) });
        assert!(e.to_string().contains("-53"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xa0],
            vec![0x01],
            // no alg
            cbor(&ciborium::Value::Map(vec![(int(1), int(2))])),
            // duplicate label
            cbor(&ciborium::Value::Map(vec![
                (int(1), int(2)),
                (int(1), int(2)),
                (int(3), int(-7)),
            ])),
        ];
        for c in cases {
            let e = PublicKey::from_cose(&c).unwrap_err();
            assert!(
                matches!(e.reason(), "public-key-malformed" | "public-key-invalid"),
                "{c:?}: {e}"
            );
        }
        // Trailing bytes after the key.
        let (_, mut key) = p256_pair();
        key.push(0);
        assert_eq!(
            PublicKey::from_cose(&key).unwrap_err().reason(),
            "public-key-malformed"
        );
    }

    #[test]
    fn rsa_der_encoding_is_minimal() {
        // A leading zero is stripped; a high bit gets its 0x00 sign byte.
        assert_eq!(
            rsa_public_key_der(&[0x00, 0x80], &[0x01, 0x00, 0x01]).unwrap(),
            vec![
                0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01
            ]
        );
    }
}
