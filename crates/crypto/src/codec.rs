//! Bounded primitives for reading and writing protocol fields. `Reader` takes from a borrowed
//! slice with `split_at_checked`, so no length is trusted before it is checked against the
//! bytes actually present; `finish` rejects trailing bytes.

use crate::error::DecodeError;

/// A cursor over untrusted bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.rest.split_at_checked(len).ok_or(DecodeError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u8`-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes8(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u8()?);
        check_max(what, len, max)?;
        self.take(len)
    }

    /// A `u16`-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes16(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        check_max(what, len, max)?;
        self.take(len)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str16(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes16(what, max)?).map_err(|_| DecodeError::NotUtf8(what))
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

pub(crate) fn check_max(what: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}

// Writers. Callers have validated lengths against the same limits the reader enforces, so the
// `as` conversions below cannot truncate; they saturate defensively via `try_from` anyway.

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_bytes8(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

pub(crate) fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    put_u16(out, len);
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_past_end_is_truncated_and_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4), Err(DecodeError::Truncated));
        assert_eq!(r.take(3), Ok(&[1u8, 2, 3][..]));
        assert!(r.finish().is_ok());
    }

    #[test]
    fn declared_length_is_checked_before_reading() {
        let mut r = Reader::new(&[200, 0]);
        assert_eq!(r.bytes8("field", 10), Err(DecodeError::TooLong { what: "field", len: 200, max: 10 }));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[0, 1, 9]);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn bad_utf8_is_named() {
        let mut r = Reader::new(&[0, 2, 0xff, 0xfe]);
        assert_eq!(r.str16("detail", 10), Err(DecodeError::NotUtf8("detail")));
    }
}
