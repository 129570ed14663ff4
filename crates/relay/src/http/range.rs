//! `Range` request headers (RFC 9110 §14): one byte range, or none.

/// A satisfiable byte range: `start..=end` within a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ByteRange {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl ByteRange {
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses a `Range` header value against a blob of `size` bytes.
///
/// `Ok(None)` means "send the whole blob": no header, a unit other than
/// bytes (which RFC 9110 says to ignore), or a suffix range of the empty
/// blob (satisfiable by RFC 9110 §14.1.2, as the whole of it, which no
/// `Content-Range` can name). `Err(())` means the range is malformed,
/// multi-part or unsatisfiable: 416.
pub(crate) fn parse(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(header) = header else {
        return Ok(None);
    };
    // Range units are matched without regard to case (RFC 9110 §14.1).
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    if spec.contains(',') {
        return Err(());
    }
    let (first, last) = spec.trim().split_once('-').ok_or(())?;
    let number = |s: &str| -> Result<u64, ()> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        s.parse().map_err(|_| ())
    };
    let range = if first.is_empty() {
        // Suffix: the last N bytes.
        let n = number(last)?;
        if n == 0 {
            return Err(());
        }
        if size == 0 {
            return Ok(None);
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            number(last)?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Err(());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Result<Option<ByteRange>, ()> {
        Ok(Some(ByteRange { start, end }))
    }

    #[test]
    fn forms() {
        assert_eq!(parse(None, 10), Ok(None));
        assert_eq!(parse(Some("bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse(Some("bytes=5-"), 10), r(5, 9));
        assert_eq!(parse(Some("bytes=-3"), 10), r(7, 9));
        assert_eq!(parse(Some("bytes=-30"), 10), r(0, 9));
        assert_eq!(parse(Some("bytes=8-100"), 10), r(8, 9));
        assert_eq!(parse(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse(Some("Bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse(Some("BYTES=-3"), 10), r(7, 9));
        // The whole of the empty blob: 200, not 416.
        assert_eq!(parse(Some("bytes=-5"), 0), Ok(None));
    }

    #[test]
    fn refusals() {
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse(Some(bad), 10), Err(()), "{bad}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Err(()));
        assert_eq!(parse(Some("bytes=-0"), 0), Err(()));
    }
}
