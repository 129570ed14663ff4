//! Which bytes of a file `get --range` asks for.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};

/// A range as written: `START-END` (both included, as in HTTP) or
/// `START-` (to the end of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSpec {
    start: u64,
    last: Option<u64>,
}

/// Bytes `start..end` of a file (`end` excluded), within its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// The byte after the last.
    pub end: u64,
}

impl ByteRange {
    /// The whole of a file of `size` bytes.
    pub fn whole(size: u64) -> Self {
        Self {
            start: 0,
            end: size,
        }
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no bytes (only the whole of an empty file).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl RangeSpec {
    /// The bytes this asks for of a file of `size` bytes: an end past the
    /// file stops at its end, a start past it is an error.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the range starts at or after the end of the
    /// file.
    pub fn within(self, size: u64) -> Result<ByteRange> {
        if self.start >= size {
            return Err(Error::Invalid(format!(
                "the range starts at byte {}, but the file has {} (the last is {})",
                self.start,
                crate::text::count(size, "byte", "bytes"),
                size.saturating_sub(1)
            )));
        }
        let end = self
            .last
            .map_or(size, |last| last.saturating_add(1).min(size));
        Ok(ByteRange {
            start: self.start,
            end,
        })
    }
}

impl FromStr for RangeSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let usage =
            || format!("{text:?} is not a range: write START-END (bytes, both included) or START-");
        let (start, last) = text.split_once('-').ok_or_else(usage)?;
        let start: u64 = start.trim().parse().map_err(|_| usage())?;
        let last = match last.trim() {
            "" => None,
            last => Some(last.parse::<u64>().map_err(|_| usage())?),
        };
        if last.is_some_and(|last| last < start) {
            return Err(format!("{text:?} ends before it starts"));
        }
        Ok(Self { start, last })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}", self.start, self.end.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ranges_parse_and_fit_the_file() {
        let spec: RangeSpec = "10-19".parse().unwrap();
        assert_eq!(spec.within(100).unwrap(), ByteRange { start: 10, end: 20 });
        assert_eq!(spec.within(15).unwrap(), ByteRange { start: 10, end: 15 });
        let open: RangeSpec = "5-".parse().unwrap();
        assert_eq!(open.within(8).unwrap(), ByteRange { start: 5, end: 8 });
        assert!(open.within(5).is_err());
        assert!("0-0".parse::<RangeSpec>().unwrap().within(0).is_err());
        for bad in [
            "",
            "5",
            "-5",
            "a-b",
            "9-3",
            "1-2-3",
            "18446744073709551616-",
        ] {
            assert!(bad.parse::<RangeSpec>().is_err(), "{bad}");
        }
        assert_eq!(ByteRange { start: 10, end: 20 }.to_string(), "bytes 10-19");
    }
}
