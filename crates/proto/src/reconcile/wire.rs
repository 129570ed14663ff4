//! The byte layout of reconciliation messages.
//!
//! Decoding is a streaming iterator over borrowed input, so a message costs
//! no allocation however many ranges it claims; [`validate`] runs it to the
//! end before a caller acts on any range. Encoding goes through [`Encoder`],
//! which keeps a reserve so that a message can always be closed with a
//! fingerprint of the rest, whatever was written before.

use super::ReconcileError;
use super::fingerprint::{FINGERPRINT_MAX, Fingerprint};
use super::profile::Profile;
use crate::BlobId;
use crate::error::DecodeError;

/// Mode tags, in the top two bits of a range's header byte.
mod mode {
    pub(super) const SKIP: u8 = 0;
    pub(super) const FINGERPRINT: u8 = 1;
    pub(super) const ID_LIST: u8 = 2;
    pub(super) const ID_LIST_RESPONSE: u8 = 3;
}

/// Low six bits of a header byte that stand for the end of the id space.
const END_CODE: u8 = 0;

/// An exclusive upper bound in the id space, ordered like the ids.
///
/// `Below(v)` holds the bound's prefix padded with zero bytes; on the wire it
/// is that prefix without its trailing zeros, so each value has exactly one
/// encoding. `Below([0; 32])` is [`START`], the lower bound of the first
/// range, and is never encoded (its prefix would be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Bound {
    Below([u8; 32]),
    End,
}

/// The lower bound of the first range.
pub(super) const START: Bound = Bound::Below([0; 32]);

impl Bound {
    /// Whether `id` lies below this bound.
    pub(super) fn is_above(&self, id: &[u8; 32]) -> bool {
        match self {
            Self::Below(v) => id < v,
            Self::End => true,
        }
    }

    /// Length of the encoded prefix: 0 for `End`, else 1..=32.
    fn prefix_len(&self) -> usize {
        match self {
            Self::Below(v) => v.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1),
            Self::End => 0,
        }
    }

    /// Encoded size of a range with this bound: header byte plus prefix.
    pub(super) fn encoded_len(&self) -> usize {
        1 + self.prefix_len()
    }

    /// The shortest bound `b` with `prev < b <= next`: the prefix of `next`
    /// one byte longer than what it shares with `prev`. Its last byte is
    /// `next`'s first differing byte, which exceeds `prev`'s and so is not
    /// zero: the result is canonical.
    pub(super) fn between(prev: &BlobId, next: &BlobId) -> Self {
        let (prev, next) = (prev.as_bytes(), next.as_bytes());
        let shared = prev.iter().zip(next).take_while(|(a, b)| a == b).count();
        // `prev < next` makes `shared` at most 31; the `min` only keeps a
        // broken caller from indexing out of bounds.
        let len = (shared + 1).min(32);
        let mut value = [0u8; 32];
        value[..len].copy_from_slice(&next[..len]);
        Self::Below(value)
    }
}

/// What a range says about the sender's ids within it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Payload<'m> {
    /// Nothing left to do here.
    Skip,
    /// The fingerprint of the sender's ids in the range.
    Fingerprint(Fingerprint),
    /// All of the sender's ids in the range, ascending.
    IdList(&'m [[u8; 32]]),
    /// The responder's answer to an `IdList`: its ids the initiator lacks
    /// (ascending), and one bit per id of the initiator's list, set when the
    /// responder lacks that id.
    IdListResponse {
        need: &'m [[u8; 32]],
        bits: usize,
        bitmap: &'m [u8],
    },
}

/// Bit `i` of an `IdListResponse` bitmap (least significant bit first).
pub(super) fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap
        .get(i / 8)
        .is_some_and(|byte| byte >> (i % 8) & 1 == 1)
}

/// One decoded range, `[lower, upper)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range<'m> {
    pub(super) lower: Bound,
    pub(super) upper: Bound,
    pub(super) payload: Payload<'m>,
}

/// Reads the ranges of one message in order, checking every rule.
#[derive(Debug)]
pub(super) struct Ranges<'m> {
    msg: &'m [u8],
    pos: usize,
    lower: Bound,
    prev_skip: bool,
    allow_response: bool,
    profile: Profile,
}

impl<'m> Ranges<'m> {
    /// Checks the length and version. `allow_response` says whether
    /// `IdListResponse` ranges may appear: only the initiator receives them.
    pub(super) fn new(msg: &'m [u8], allow_response: bool) -> Result<Self, ReconcileError> {
        if msg.len() > super::MAX_MESSAGE_LEN {
            return Err(ReconcileError::TooLong {
                len: msg.len(),
                max: super::MAX_MESSAGE_LEN,
            });
        }
        let mut ranges = Self {
            msg,
            pos: 0,
            lower: START,
            prev_skip: false,
            allow_response,
            // Replaced by the version's own once its byte is read.
            profile: super::profile::V1,
        };
        let version = ranges.u8()?;
        ranges.profile = Profile::of(version).ok_or(ReconcileError::UnsupportedVersion(version))?;
        Ok(ranges)
    }

    /// The version the message is in.
    pub(super) fn profile(&self) -> Profile {
        self.profile
    }

    fn malformed(&self, source: DecodeError) -> ReconcileError {
        ReconcileError::Malformed {
            offset: self.pos,
            source,
        }
    }

    fn invalid(&self, field: &'static str, reason: &'static str) -> ReconcileError {
        self.malformed(DecodeError::Invalid { field, reason })
    }

    fn take(&mut self, n: usize) -> Result<&'m [u8], ReconcileError> {
        let available = self.msg.len() - self.pos;
        if n > available {
            return Err(self.malformed(DecodeError::Truncated {
                needed: n,
                available,
            }));
        }
        let bytes = &self.msg[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, ReconcileError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, ReconcileError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A `u16` count and that many ids, strictly ascending, inside
    /// `[lower, upper)`. The bytes are checked to exist before anything
    /// else happens; nothing is allocated.
    fn ids(&mut self, lower: &Bound, upper: &Bound) -> Result<&'m [[u8; 32]], ReconcileError> {
        let count = self.u16()?;
        let start = self.pos;
        let (ids, _) = self.take(count * BlobId::LEN)?.as_chunks::<32>();
        let error = |reason| ReconcileError::Malformed {
            offset: start,
            source: DecodeError::Invalid {
                field: "id list",
                reason,
            },
        };
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(error("ids not strictly ascending"));
        }
        let below_lower = ids.first().is_some_and(|id| lower.is_above(id));
        let not_below_upper = ids.last().is_some_and(|id| !upper.is_above(id));
        if below_lower || not_below_upper {
            return Err(error("id outside its range"));
        }
        Ok(ids)
    }

    /// The next range, or `None` after the last one.
    pub(super) fn next_range(&mut self) -> Result<Option<Range<'m>>, ReconcileError> {
        let left = self.msg.len() - self.pos;
        match (self.lower, left) {
            (Bound::End, 0) => return Ok(None),
            (Bound::End, count) => {
                return Err(self.malformed(DecodeError::TrailingBytes { count }));
            }
            // Ranges must reach the end of the id space, so that a message
            // cut short at a range boundary is refused, not read as "the
            // rest needs nothing".
            (Bound::Below(_), 0) => {
                return Err(self.malformed(DecodeError::Truncated {
                    needed: 1,
                    available: 0,
                }));
            }
            (Bound::Below(_), _) => {}
        }
        let start = self.pos;
        let header = self.u8()?;
        let upper = match header & 0x3f {
            END_CODE => Bound::End,
            len @ 1..=32 => {
                let prefix = self.take(usize::from(len))?;
                if prefix.last() == Some(&0) {
                    return Err(self.invalid("bound", "prefix ends in a zero byte"));
                }
                let mut value = [0u8; 32];
                value[..prefix.len()].copy_from_slice(prefix);
                Bound::Below(value)
            }
            _ => return Err(self.invalid("bound", "prefix longer than 32 bytes")),
        };
        if upper <= self.lower {
            self.pos = start;
            return Err(self.invalid("bound", "not above the previous bound"));
        }
        let lower = self.lower;
        let payload = match header >> 6 {
            mode::SKIP if self.prev_skip => {
                self.pos = start;
                return Err(self.invalid("mode", "two adjacent skip ranges"));
            }
            mode::SKIP => Payload::Skip,
            mode::FINGERPRINT => {
                let len = self.profile.fingerprint_len;
                let mut fp = [0u8; FINGERPRINT_MAX];
                fp[..len].copy_from_slice(self.take(len)?);
                Payload::Fingerprint(fp)
            }
            mode::ID_LIST => Payload::IdList(self.ids(&lower, &upper)?),
            _ if !self.allow_response => {
                self.pos = start;
                return Err(self.invalid("mode", "id-list response sent to the responder"));
            }
            _ => {
                let need = self.ids(&lower, &upper)?;
                let bits = self.u16()?;
                let bitmap = self.take(bits.div_ceil(8))?;
                if bits % 8 != 0 && bitmap.last().is_some_and(|b| b >> (bits % 8) != 0) {
                    return Err(self.invalid("bitmap", "padding bits not zero"));
                }
                Payload::IdListResponse { need, bits, bitmap }
            }
        };
        self.prev_skip = matches!(payload, Payload::Skip);
        self.lower = upper;
        Ok(Some(Range {
            lower,
            upper,
            payload,
        }))
    }
}

/// Checks a whole message without acting on it; the version it is in.
pub(super) fn validate(msg: &[u8], allow_response: bool) -> Result<Profile, ReconcileError> {
    let mut ranges = Ranges::new(msg, allow_response)?;
    while ranges.next_range()?.is_some() {}
    Ok(ranges.profile())
}

/// Bytes kept free until the message is finished: a pending skip (header
/// and a 32-byte prefix) and the closing fingerprint over `[.., End)`, at
/// the longest fingerprint of any version.
pub(super) const RESERVE: usize = (1 + 32) + (1 + FINGERPRINT_MAX);

/// Encoded size of a `Fingerprint` range in `profile`'s version.
pub(super) fn fingerprint_len(profile: Profile, upper: &Bound) -> usize {
    upper.encoded_len() + profile.fingerprint_len
}

/// Encoded size of an `IdList` range of `count` ids.
pub(super) fn id_list_len(upper: &Bound, count: usize) -> usize {
    upper.encoded_len() + 2 + count * BlobId::LEN
}

/// Encoded size of an `IdListResponse` range.
pub(super) fn id_list_response_len(upper: &Bound, need: usize, bits: usize) -> usize {
    upper.encoded_len() + 2 + need * BlobId::LEN + 2 + bits.div_ceil(8)
}

/// Writes one message under a frame limit.
///
/// Consecutive skips merge into one, so the output is canonical. Callers
/// ask [`Encoder::room`] before writing a range; the reserve behind it
/// guarantees that [`Encoder::finish`] and [`Encoder::finish_with_rest`]
/// stay within the limit.
#[derive(Debug)]
pub(super) struct Encoder {
    out: Vec<u8>,
    pending_skip: Option<Bound>,
    limit: usize,
    profile: Profile,
}

impl Encoder {
    /// A message in `profile`'s version, of at most `limit` bytes.
    pub(super) fn new(limit: usize, profile: Profile) -> Self {
        Self {
            out: vec![profile.version],
            pending_skip: None,
            limit,
            profile,
        }
    }

    /// Bytes the next non-skip range may take.
    pub(super) fn room(&self) -> usize {
        let pending = self.pending_skip.map_or(0, |b| b.encoded_len());
        self.limit
            .saturating_sub(self.out.len() + pending + RESERVE)
    }

    pub(super) fn skip(&mut self, upper: Bound) {
        self.pending_skip = Some(upper);
    }

    fn header(&mut self, mode: u8, upper: &Bound) {
        if let Some(skip) = self.pending_skip.take() {
            self.header(mode::SKIP, &skip);
        }
        let len = upper.prefix_len();
        // `prefix_len` is at most 32, so the cast keeps every bit.
        #[allow(clippy::cast_possible_truncation)]
        self.out.push(mode << 6 | len as u8);
        if let Bound::Below(v) = upper {
            self.out.extend_from_slice(&v[..len]);
        }
    }

    fn count(&mut self, n: usize) {
        // Callers never pass more than u16::MAX; saturating keeps a broken
        // caller from panicking (the peer then refuses the message).
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        self.out.extend_from_slice(&n.to_be_bytes());
    }

    /// A fingerprint range: the first bytes of `fp`, as many as the
    /// version sends.
    pub(super) fn fingerprint(&mut self, upper: &Bound, fp: &Fingerprint) {
        self.header(mode::FINGERPRINT, upper);
        self.out
            .extend_from_slice(&fp[..self.profile.fingerprint_len]);
    }

    pub(super) fn id_list(&mut self, upper: &Bound, ids: &[BlobId]) {
        self.header(mode::ID_LIST, upper);
        self.count(ids.len());
        for id in ids {
            self.out.extend_from_slice(id.as_bytes());
        }
    }

    /// `bitmap` holds `bits` bits, least significant first, padding zero.
    pub(super) fn id_list_response(
        &mut self,
        upper: &Bound,
        need: &[BlobId],
        bits: usize,
        bitmap: &[u8],
    ) {
        self.header(mode::ID_LIST_RESPONSE, upper);
        self.count(need.len());
        for id in need {
            self.out.extend_from_slice(id.as_bytes());
        }
        self.count(bits);
        self.out.extend_from_slice(bitmap);
    }

    /// Whether every range written so far is a skip.
    pub(super) fn is_settled(&self) -> bool {
        self.out.len() == 1
    }

    /// The message; the caller has covered the id space up to `End`.
    pub(super) fn finish(mut self) -> Vec<u8> {
        if let Some(skip) = self.pending_skip.take() {
            self.header(mode::SKIP, &skip);
        }
        self.out
    }

    /// The message, closed with a fingerprint over everything from the end
    /// of what was written to the end of the id space.
    pub(super) fn finish_with_rest(mut self, fp: &Fingerprint) -> Vec<u8> {
        self.fingerprint(&Bound::End, fp);
        self.out
    }
}
