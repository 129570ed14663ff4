//! The canonical binary encoding shared by every record.
//!
//! The format is deliberately plain so that a second implementation can be
//! written from docs/PROTOCOL.md alone: fixed-width big-endian integers,
//! length-prefixed byte strings, count-prefixed lists, one-byte tags for
//! enums and options. Every value has exactly one encoding, which is what
//! lets signatures cover encoded bytes: a decoder that accepted two spellings
//! of the same record would let a relay and a client disagree about what was
//! signed.
//!
//! [`Reader`] checks each length against a caller-stated maximum *before*
//! allocating, and [`Reader::finish`] refuses trailing bytes.

use crate::error::DecodeError;

/// Appends canonical encodings to a byte buffer.
///
/// Lengths that do not fit their prefix are clamped rather than panicking;
/// the result then fails to decode, which is how [`crate::SignedRecord::sign`]
/// refuses to sign a record that breaks a bound.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn fixed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A byte string with a 16-bit length prefix.
    pub(crate) fn bytes16(&mut self, bytes: &[u8]) {
        self.u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
        self.fixed(bytes);
    }

    /// A byte string with a 32-bit length prefix.
    pub(crate) fn bytes32(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.fixed(bytes);
    }

    /// The count prefix of a list.
    pub(crate) fn count(&mut self, count: usize) {
        self.u16(u16::try_from(count).unwrap_or(u16::MAX));
    }

    pub(crate) fn option<T>(&mut self, value: Option<&T>, mut f: impl FnMut(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
}

/// Reads canonical encodings from a borrowed byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Succeeds only if every byte has been consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
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

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A 16-bit-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        Self::check_len(field, len, max)?;
        self.take(len)
    }

    /// A 32-bit-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes32(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        Self::check_len(field, len, max)?;
        self.take(len)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes16(field, max)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// The count prefix of a list of at most `max` items.
    pub(crate) fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = usize::from(self.u16()?);
        Self::check_len(field, len, max)?;
        Ok(len)
    }

    /// An optional value: tag 0 is absent, tag 1 is present; anything else is
    /// refused so that there is one encoding of each value.
    pub(crate) fn option<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            tag => Err(DecodeError::UnknownTag { field, tag }),
        }
    }

    fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
        if len > max {
            Err(DecodeError::TooLong { field, len, max })
        } else {
            Ok(())
        }
    }
}

/// Decodes a whole value from `bytes`, refusing trailing data.
pub(crate) fn decode_all<T>(
    bytes: &[u8],
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut reader = Reader::new(bytes);
    let value = f(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.u16(0x0102);
        w.u32(0x0304_0506);
        w.u64(0x0708_090a_0b0c_0d0e);
        assert_eq!(
            w.into_bytes(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
        );
    }

    #[test]
    fn length_is_checked_before_reading() {
        // A claimed length of 65535 with no bytes behind it must fail on the
        // bound, not by trying to read (or allocate) 64 KiB.
        let err = Reader::new(&[0xff, 0xff]).bytes16("name", 64).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLong {
                field: "name",
                len: 0xffff,
                max: 64
            }
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let err = decode_all(&[1, 2], |r| r.u8()).unwrap_err();
        assert_eq!(err, DecodeError::TrailingBytes { count: 1 });
    }

    #[test]
    fn option_tags_other_than_zero_and_one_are_refused() {
        let err = Reader::new(&[2]).option("x", |r| r.u8()).unwrap_err();
        assert_eq!(err, DecodeError::UnknownTag { field: "x", tag: 2 });
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = Reader::new(&[0, 1, 0xff]).str16("name", 8).unwrap_err();
        assert_eq!(err, DecodeError::InvalidUtf8 { field: "name" });
    }
}
