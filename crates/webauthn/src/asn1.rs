//! A minimal, strict DER reader for the few structures the `der` crate does not read for us:
//! Android's KeyDescription (context tags above 30, which `der` 0.7 cannot represent), Apple's
//! nonce extension, RSA public keys inside certificates, and the raw bytes of a certificate's
//! `tbsCertificate` (what its issuer signed).
//!
//! Only definite, minimally encoded lengths are accepted; anything else is `None`.

/// The class bits of an identifier octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Universal,
    Application,
    Context,
    Private,
}

/// One type-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub class: Class,
    pub constructed: bool,
    pub tag: u32,
    /// The contents octets.
    pub value: &'a [u8],
    /// The whole element: identifier, length and contents.
    pub raw: &'a [u8],
}

pub(crate) const INTEGER: u32 = 2;
pub(crate) const OCTET_STRING: u32 = 4;
pub(crate) const NULL: u32 = 5;
pub(crate) const ENUMERATED: u32 = 10;
pub(crate) const SEQUENCE: u32 = 16;
pub(crate) const SET: u32 = 17;

impl<'a> Tlv<'a> {
    /// Is this the universal, primitive-or-constructed element `tag` (SEQUENCE and SET must be
    /// constructed, the others primitive)?
    pub(crate) fn is_universal(&self, tag: u32) -> bool {
        self.class == Class::Universal
            && self.tag == tag
            && self.constructed == matches!(tag, SEQUENCE | SET)
    }

    /// The elements inside a constructed element.
    pub(crate) fn children(&self) -> Option<Vec<Tlv<'a>>> {
        if !self.constructed {
            return None;
        }
        read_all(self.value)
    }
}

/// Splits one element off the front of `input`.
pub(crate) fn read<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
    let start = *input;
    let mut rest = start;
    let (&first, tail) = rest.split_first()?;
    rest = tail;
    let class = match first >> 6 {
        0 => Class::Universal,
        1 => Class::Application,
        2 => Class::Context,
        _ => Class::Private,
    };
    let constructed = first & 0x20 != 0;
    let mut tag = u32::from(first & 0x1f);
    if tag == 0x1f {
        // High tag number form: base-128, most significant group first, minimal, below 2^28.
        tag = 0;
        for i in 0.. {
            let (&b, tail) = rest.split_first()?;
            rest = tail;
            if i == 0 && b == 0x80 {
                return None;
            }
            if i == 4 {
                return None;
            }
            tag = (tag << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
        if tag < 0x1f {
            return None;
        }
    }
    let (&len_byte, tail) = rest.split_first()?;
    rest = tail;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let n = usize::from(len_byte & 0x7f);
        // 0x80 is the indefinite form (BER only); more than four length octets is never needed.
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        rest = rest.get(n..)?;
        if bytes.first() == Some(&0) {
            return None;
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        len
    };
    let value = rest.get(..len)?;
    rest = rest.get(len..)?;
    let used = start.len() - rest.len();
    *input = rest;
    Some(Tlv {
        class,
        constructed,
        tag,
        value,
        raw: start.get(..used)?,
    })
}

/// Reads exactly one element: nothing may follow it.
pub(crate) fn read_one(input: &[u8]) -> Option<Tlv<'_>> {
    let mut rest = input;
    let tlv = read(&mut rest)?;
    rest.is_empty().then_some(tlv)
}

/// Reads a run of elements that fills `input` exactly (at most 4096 of them).
pub(crate) fn read_all(input: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut rest = input;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if out.len() == 4096 {
            return None;
        }
        out.push(read(&mut rest)?);
    }
    Some(out)
}

/// The value of a DER INTEGER's contents that fits an `i64` (minimal two's complement).
pub(crate) fn integer_i64(value: &[u8]) -> Option<i64> {
    match value {
        [] => return None,
        [0x00, next, ..] if next & 0x80 == 0 => return None,
        [0xff, next, ..] if next & 0x80 != 0 => return None,
        _ => {}
    }
    if value.len() > 8 {
        return None;
    }
    let negative = value.first().is_some_and(|b| b & 0x80 != 0);
    let init: i64 = if negative { -1 } else { 0 };
    Some(value.iter().fold(init, |acc, &b| (acc << 8) | i64::from(b)))
}

/// The magnitude of a non-negative DER INTEGER, leading zero bytes stripped.
pub(crate) fn unsigned_integer(value: &[u8]) -> Option<&[u8]> {
    match value {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        [0x00, next, ..] if next & 0x80 == 0 => None,
        _ => Some(crate::cose::strip_leading_zeros(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_low_and_high_tags() {
        // [702] EXPLICIT INTEGER 0, as Android writes KM_ORIGIN_GENERATED.
        let b = [0xbf, 0x85, 0x3e, 0x03, 0x02, 0x01, 0x00];
        let t = read_one(&b).unwrap();
        assert_eq!((t.class, t.constructed, t.tag), (Class::Context, true, 702));
        let inner = read_one(t.value).unwrap();
        assert!(inner.is_universal(INTEGER));
        assert_eq!(integer_i64(inner.value), Some(0));
        assert_eq!(t.raw, &b[..]);
    }

    #[test]
    fn refuses_non_der() {
        for bad in [
            &[0x04, 0x81, 0x01, 0x00][..], // non-minimal long length
            &[0x30, 0x80, 0x00, 0x00],     // indefinite length
            &[0x04, 0x05, 0x00],           // truncated
            &[0x1f, 0x80, 0x01, 0x00],     // tag with a leading zero group
            &[0x1f, 0x1e, 0x00],           // high form for a low tag
            &[0x04, 0x85, 1, 0, 0, 0, 0],  // five length octets
            &[],
        ] {
            assert_eq!(read_one(bad), None, "{bad:?}");
        }
        assert_eq!(read_one(&[0x05, 0x00, 0x00]), None); // trailing byte
    }

    #[test]
    fn integers() {
        assert_eq!(integer_i64(&[0x7f]), Some(127));
        assert_eq!(integer_i64(&[0x00, 0x80]), Some(128));
        assert_eq!(integer_i64(&[0xff]), Some(-1));
        assert_eq!(integer_i64(&[0x00, 0x01]), None);
        assert_eq!(integer_i64(&[0xff, 0x80]), None);
        assert_eq!(integer_i64(&[1; 9]), None);
        assert_eq!(unsigned_integer(&[0x00, 0x80]), Some(&[0x80][..]));
        assert_eq!(unsigned_integer(&[0x80]), None);
    }
}
