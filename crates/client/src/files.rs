//! What a stored name holds: the blob (or, for a chunked file, its
//! manifest and chunk blobs), its size, and where its copies are. The
//! table of names is built by sync (`crate::crdt`) from every device's
//! operations.

use serde::{Deserialize, Serialize};

use cairn_proto::{BlobId, VerifyingKey};

use crate::error::{Error, Result};

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// One stored file.
///
/// A file is stored as one sealed blob, or, when it is larger than one
/// chunk, as chunks (PROTOCOL.md §10.8): then `blob` is its sealed manifest
/// and `chunks` the distinct blobs the manifest lists. Every copy holds
/// all of a file's blobs: a file has a copy on a relay when that relay
/// holds its manifest and every chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "wire::Entry", into = "wire::Entry")]
pub struct FileEntry {
    /// The sealed blob, or a chunked file's sealed manifest.
    pub blob: BlobId,
    /// A chunked file's chunk blobs, each once, in the order the manifest
    /// first lists them; empty for a file stored as one blob.
    pub chunks: Vec<BlobId>,
    /// Bytes of data (before sealing).
    pub size: u64,
    /// Bytes stored per copy: the sealed blob, or the manifest and every
    /// chunk.
    pub sealed_size: u64,
    /// The vault key generation it is sealed to.
    pub generation: u32,
    /// When it was stored (Unix seconds).
    pub stored_at: u64,
    /// Where copies were acknowledged.
    pub copies: Vec<Copy>,
}

impl FileEntry {
    /// Whether the file is stored as chunks.
    pub fn is_chunked(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// The sealed size of `blob`, one of the entry's blobs, when the entry
    /// records it: a one-blob file's (a chunked file records only the
    /// total of its blobs).
    pub fn sealed_size_of(&self, blob: &BlobId) -> Option<u64> {
        (!self.is_chunked() && *blob == self.blob).then_some(self.sealed_size)
    }

    /// How reports name blob `index` of [`FileEntry::blobs`] of the file
    /// `name`: the file itself, its manifest, or one of its chunk blobs.
    pub fn blob_label(&self, name: &str, index: usize) -> String {
        match index {
            0 if self.is_chunked() => format!("{name} (manifest)"),
            0 => name.to_owned(),
            i => format!("{name} (chunk blob {i} of {})", self.chunks.len()),
        }
    }

    /// Every blob a copy of the file holds: the blob or manifest first,
    /// then the chunks.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobId> {
        std::iter::once(&self.blob).chain(&self.chunks)
    }
}

/// The JSON form of an entry (PROTOCOL.md §10.6). A chunked file names its
/// manifest `manifest`, not `blob`: a device older than chunked files then
/// refuses the entry (it has no `blob`) rather than taking the manifest
/// for the file's data.
mod wire {
    use serde::{Deserialize, Serialize};

    use cairn_proto::BlobId;

    use super::{Copy, FileEntry};

    /// Most chunk blobs one entry lists (a manifest's own bound).
    const MAX_CHUNKS: usize = crate::manifest::MAX_CHUNKS;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Entry {
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text_serde::optional"
        )]
        blob: Option<BlobId>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::text_serde::optional"
        )]
        manifest: Option<BlobId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "id_list")]
        chunks: Vec<BlobId>,
        size: u64,
        sealed_size: u64,
        generation: u32,
        stored_at: u64,
        copies: Vec<Copy>,
    }

    impl From<FileEntry> for Entry {
        fn from(entry: FileEntry) -> Self {
            let chunked = entry.is_chunked();
            Self {
                blob: (!chunked).then_some(entry.blob),
                manifest: chunked.then_some(entry.blob),
                chunks: entry.chunks,
                size: entry.size,
                sealed_size: entry.sealed_size,
                generation: entry.generation,
                stored_at: entry.stored_at,
                copies: entry.copies,
            }
        }
    }

    impl TryFrom<Entry> for FileEntry {
        type Error = String;

        fn try_from(entry: Entry) -> Result<Self, String> {
            let blob = match (entry.blob, entry.manifest, entry.chunks.is_empty()) {
                (Some(blob), None, true) => blob,
                (None, Some(manifest), false) => manifest,
                (Some(_), _, false) | (None, Some(_), true) => {
                    return Err("an entry has `manifest` and `chunks` together, or neither".into());
                }
                (Some(_), Some(_), true) | (None, None, _) => {
                    return Err("an entry names exactly one of `blob` and `manifest`".into());
                }
            };
            if entry.chunks.len() > MAX_CHUNKS {
                return Err(format!(
                    "an entry lists {} chunks, more than {MAX_CHUNKS}",
                    entry.chunks.len()
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            if !entry
                .chunks
                .iter()
                .all(|id| *id != blob && seen.insert(*id))
            {
                return Err("an entry lists a blob twice".into());
            }
            Ok(Self {
                blob,
                chunks: entry.chunks,
                size: entry.size,
                sealed_size: entry.sealed_size,
                generation: entry.generation,
                stored_at: entry.stored_at,
                copies: entry.copies,
            })
        }
    }

    mod id_list {
        use cairn_proto::BlobId;
        use serde::ser::SerializeSeq as _;
        use serde::{Deserialize as _, Deserializer, Serializer};

        pub(super) fn serialize<S: Serializer>(ids: &[BlobId], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(ids.len()))?;
            for id in ids {
                seq.serialize_element(&id.to_string())?;
            }
            seq.end()
        }

        pub(super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<BlobId>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|text| text.parse().map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

/// One acknowledged copy of a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// The relay's URL when the copy was made.
    pub url: String,
    /// The relay's key.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub relay: VerifyingKey,
    /// The device whose upload key owns the copy (only it can delete it).
    #[serde(with = "crate::text_serde::repeated_key")]
    pub owner: VerifyingKey,
}

/// A relay a copy is held on, by URL and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// The relay's URL.
    pub url: String,
    /// The relay's key.
    #[serde(with = "crate::text_serde::repeated_key")]
    pub relay: VerifyingKey,
}

/// Checks a name a file is stored under.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "a name must be 1–{MAX_NAME_LEN} bytes long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a name must not contain control characters".into(),
        ));
    }
    if name.parse::<BlobId>().is_ok() {
        return Err(Error::Invalid(
            "a name must not look like a blob id (64 hex digits): `cairn get` would read it as one"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry_json(extra: &str) -> String {
        let key = cairn_proto::SigningKey::from_seed(&[1; 32]).verifying_key();
        format!(
            r#"{{{extra}"size":5,"sealed_size":300,"generation":1,"stored_at":7,"copies":[{{"url":"http://r","relay":"{key}","owner":"{key}"}}]}}"#
        )
    }

    #[test]
    fn an_entry_of_the_previous_release_reads_as_one_blob_and_keeps_its_form() {
        let blob = BlobId::of(b"data");
        let old = entry_json(&format!(r#""blob":"{blob}","#));
        let entry: FileEntry = serde_json::from_str(&old).unwrap();
        assert_eq!(entry.blob, blob);
        assert!(!entry.is_chunked());
        assert_eq!(entry.sealed_size_of(&blob), Some(300));
        assert_eq!(serde_json::to_string(&entry).unwrap(), old);
    }

    #[test]
    fn a_chunked_entry_names_its_manifest_and_chunks() {
        let (manifest, one, two) = (BlobId::of(b"m"), BlobId::of(b"1"), BlobId::of(b"2"));
        let text = entry_json(&format!(
            r#""manifest":"{manifest}","chunks":["{one}","{two}"],"#
        ));
        let entry: FileEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(entry.blob, manifest);
        assert_eq!(
            entry.blobs().copied().collect::<Vec<_>>(),
            [manifest, one, two]
        );
        assert_eq!(entry.sealed_size_of(&one), None);
        assert_eq!(serde_json::to_string(&entry).unwrap(), text);
        // A reader that knows only `blob` finds none, and refuses it.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Previous {
            blob: String,
        }
        assert!(serde_json::from_str::<Previous>(&text).is_err());
    }

    #[test]
    fn malformed_entries_are_refused() {
        let (a, b) = (BlobId::of(b"a"), BlobId::of(b"b"));
        for extra in [
            String::new(),
            format!(r#""blob":"{a}","manifest":"{b}","#),
            format!(r#""blob":"{a}","chunks":["{b}"],"#),
            format!(r#""manifest":"{a}","#),
            format!(r#""manifest":"{a}","chunks":[],"#),
            format!(r#""manifest":"{a}","chunks":["{b}","{b}"],"#),
            format!(r#""manifest":"{a}","chunks":["{a}"],"#),
            format!(r#""manifest":"{a}","chunks":["nothex"],"#),
        ] {
            let text = entry_json(&extra);
            assert!(serde_json::from_str::<FileEntry>(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("a/b c.txt").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name(&BlobId::of(b"").to_string()).is_err());
    }
}
