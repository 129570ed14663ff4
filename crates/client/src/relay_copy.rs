//! Per-relay copies of metadata blobs (PROTOCOL.md §10.7, "Metadata
//! copies").
//!
//! An operation is signed and sealed once, and that sealed blob (the
//! *core*) is what every device merges, caches and names: its id is the
//! operation's identity. But a core stored as it is would carry the same
//! id on every relay, and colluding relays could link an identity by it.
//! So in the per-relay layout each relay stores its own copy: the core,
//! with the ids *that relay* gives the blobs it points at (the previous
//! operation, a snapshot's table, the positions a snapshot covers), padded
//! and sealed with a key only that relay's copies use. Sealing is
//! deterministic (the nonce comes from the plaintext), so the same copy is
//! made again byte for byte, and no two relays hold a common id.
//!
//! A copy's links are not signed: the signed core names what it points at
//! by core id, and a reader checks every link against that.

use zeroize::Zeroizing;

use cairn_proto::{BlobId, VerifyingKey};

/// What a copy's plaintext starts with.
const MAGIC: &[u8] = b"cairn/v3 relay copy\0";

/// Tags of the links a copy carries.
const PREV: u8 = 1;
const STATE: u8 = 2;
const COVER: u8 = 3;

/// Most links a copy may carry: a snapshot's covers are one per device.
const MAX_LINKS: usize = 4096;

/// Where, on one relay, the blobs a core points at are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Links {
    /// The previous operation of the same device.
    pub prev: Option<BlobId>,
    /// A snapshot's sealed table.
    pub state: Option<BlobId>,
    /// A snapshot's covered positions: device, and the copy of the
    /// operation at that position.
    pub covers: Vec<(VerifyingKey, BlobId)>,
}

impl Links {
    fn encode(&self, out: &mut Vec<u8>) {
        let count = usize::from(self.prev.is_some())
            + usize::from(self.state.is_some())
            + self.covers.len();
        // `MAX_LINKS` bounds what is read; a writer has far fewer devices.
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
        if let Some(prev) = &self.prev {
            out.push(PREV);
            out.extend_from_slice(prev.as_bytes());
        }
        if let Some(state) = &self.state {
            out.push(STATE);
            out.extend_from_slice(state.as_bytes());
        }
        for (device, at) in &self.covers {
            out.push(COVER);
            out.extend_from_slice(&device.to_bytes());
            out.extend_from_slice(at.as_bytes());
        }
    }

    /// The links at the start of `plain`, and the rest.
    fn decode(plain: &[u8]) -> Option<(Self, &[u8])> {
        let (count, mut rest) = plain.split_first_chunk::<4>()?;
        let count = usize::try_from(u32::from_be_bytes(*count)).ok()?;
        if count > MAX_LINKS {
            return None;
        }
        let mut links = Self::default();
        for _ in 0..count {
            let (tag, tail) = rest.split_first()?;
            let (id, tail) = match *tag {
                PREV | STATE => {
                    let (id, tail) = tail.split_first_chunk::<32>()?;
                    let slot = if *tag == PREV {
                        &mut links.prev
                    } else {
                        &mut links.state
                    };
                    if slot.replace(BlobId::from_bytes(*id)).is_some() {
                        return None;
                    }
                    (None, tail)
                }
                COVER => {
                    let (device, tail) = tail.split_first_chunk::<32>()?;
                    let (at, tail) = tail.split_first_chunk::<32>()?;
                    let device = VerifyingKey::from_bytes(device).ok()?;
                    (Some((device, BlobId::from_bytes(*at))), tail)
                }
                _ => return None,
            };
            links.covers.extend(id);
            rest = tail;
        }
        Some((links, rest))
    }
}

/// Seals `core` with its `links` into the copy for the relay whose copy
/// key is `key` ([`crate::keys::VaultKey::metadata_copy_key`]). Returns the
/// copy's id and bytes: `nonce[12] ‖ ChaCha20-Poly1305(key, nonce, padded)`.
pub(crate) fn seal(key: &[u8; 32], core: &[u8], links: &Links) -> (BlobId, Vec<u8>) {
    let mut plain = Zeroizing::new(Vec::with_capacity(MAGIC.len() + 4 + 33 * 2 + core.len()));
    plain.extend_from_slice(MAGIC);
    links.encode(&mut plain);
    plain.extend_from_slice(core);
    let copy = crate::seal::seal_named(key, blake3::hash(&plain).as_bytes(), &plain);
    (BlobId::of(&copy), copy)
}

/// What a blob served for metadata turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// A copy: the core inside, and its links on that relay.
    Copy { core: Vec<u8>, links: Links },
    /// Not a copy under any of the keys (a core stored as it is, by the
    /// shared layout or by a release before copies); the caller reads it
    /// as a core, whose links are the core ids it names.
    Plain,
    /// It opens under a key and is not a copy: a device holding the vault
    /// key wrote garbage.
    Malformed,
}

/// Opens `bytes` with whichever of `keys` seals it.
pub(crate) fn open(keys: &[Zeroizing<[u8; 32]>], bytes: &[u8]) -> Opened {
    let Some(plain) = crate::seal::open_named(keys, bytes) else {
        return Opened::Plain;
    };
    match plain
        .strip_prefix(MAGIC)
        .and_then(Links::decode)
        .filter(|(_, core)| !core.is_empty())
    {
        Some((links, core)) => Opened::Copy {
            core: core.to_vec(),
            links,
        },
        None => Opened::Malformed,
    }
}

/// Fuzzing entry (`fuzz/`): `data` as the plaintext inside a copy a relay
/// serves. Opening never panics, what opens seals back to the same bytes,
/// and the same bytes do not open without the key.
#[doc(hidden)]
pub fn fuzz_relay_copy(data: &[u8]) {
    let key = Zeroizing::new([9u8; 32]);
    let keys = std::slice::from_ref(&key);
    assert!(
        !matches!(open(keys, data), Opened::Copy { .. }),
        "bytes nobody sealed opened"
    );
    let nonce = [0u8; 12];
    let mut copy = nonce.to_vec();
    copy.extend_from_slice(&crate::seal::seal_small(&key, &nonce, data));
    if let Opened::Copy { core, links } = open(keys, &copy) {
        let (_, again) = seal(&key, &core, &links);
        assert_eq!(
            open(keys, &again),
            Opened::Copy { core, links },
            "round trip changed the copy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([byte; 32])
    }

    fn device(seed: u8) -> VerifyingKey {
        cairn_proto::SigningKey::from_seed(&[seed; 32]).verifying_key()
    }

    #[test]
    fn each_relay_key_makes_another_copy_and_the_same_key_the_same_one() {
        let links = Links {
            prev: Some(BlobId::of(b"prev")),
            state: None,
            covers: Vec::new(),
        };
        let (a, bytes_a) = seal(&key(1), b"core", &links);
        let (b, _) = seal(&key(2), b"core", &links);
        let (again, bytes_again) = seal(&key(1), b"core", &links);
        assert_ne!(a, b);
        assert_eq!((a, &bytes_a), (again, &bytes_again));
        assert_eq!(
            open(&[key(2), key(1)], &bytes_a),
            Opened::Copy {
                core: b"core".to_vec(),
                links
            }
        );
        assert_eq!(open(&[key(2)], &bytes_a), Opened::Plain);
    }

    /// A known answer: the format of PROTOCOL.md §10.7 byte for byte
    /// (another implementation makes the same copy from the same inputs).
    #[test]
    fn a_copy_is_made_as_the_protocol_says() {
        let key = key(7);
        let links = Links {
            prev: Some(BlobId::of(b"prev")),
            state: None,
            covers: vec![(device(1), BlobId::of(b"cover"))],
        };
        let (id, bytes) = seal(&key, b"core", &links);
        // The plaintext, rebuilt from the text of the protocol.
        let mut plain = b"cairn/v3 relay copy\0".to_vec();
        plain.extend_from_slice(&2u32.to_be_bytes());
        plain.push(1);
        plain.extend_from_slice(BlobId::of(b"prev").as_bytes());
        plain.push(3);
        plain.extend_from_slice(&device(1).to_bytes());
        plain.extend_from_slice(BlobId::of(b"cover").as_bytes());
        plain.extend_from_slice(b"core");
        let mut nonce_input = b"nonce".to_vec();
        nonce_input.extend_from_slice(blake3::hash(&plain).as_bytes());
        let nonce = blake3::keyed_hash(&key, &nonce_input);
        assert_eq!(&bytes[..12], &nonce.as_bytes()[..12]);
        let opened =
            crate::seal::open_small(&key, bytes[..12].try_into().unwrap(), &bytes[12..]).unwrap();
        assert_eq!(&opened[..], &plain[..]);
        assert_eq!(
            id.to_string(),
            "fe7379277a24939e11ea00fe42dfd94ed414a8fa71df6575664bdced00b9d725"
        );
    }

    #[test]
    fn a_sealed_value_that_is_not_a_copy_is_malformed() {
        let nonce = [3u8; 12];
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&crate::seal::seal_small(&key(1), &nonce, b"not a copy"));
        assert_eq!(open(&[key(1)], &bytes), Opened::Malformed);
    }

    proptest! {
        #[test]
        fn links_and_core_survive_the_round_trip(
            core in proptest::collection::vec(any::<u8>(), 1..2048),
            prev in proptest::option::of(any::<[u8; 32]>()),
            state in proptest::option::of(any::<[u8; 32]>()),
            covers in proptest::collection::vec((1u8..50, any::<[u8; 32]>()), 0..8),
        ) {
            let links = Links {
                prev: prev.map(BlobId::from_bytes),
                state: state.map(BlobId::from_bytes),
                covers: covers
                    .into_iter()
                    .map(|(seed, at)| (device(seed), BlobId::from_bytes(at)))
                    .collect(),
            };
            let (id, bytes) = seal(&key(5), &core, &links);
            prop_assert_eq!(id, BlobId::of(&bytes));
            prop_assert_eq!(open(&[key(5)], &bytes), Opened::Copy { core, links });
        }

        #[test]
        fn arbitrary_sealed_plaintexts_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_relay_copy(&data);
        }
    }
}
