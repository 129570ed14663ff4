//! The cairn relay.
//!
//! A relay stores opaque encrypted blobs for clients that are offline, serves
//! them back, and advertises its capacity and the limits it applies. It holds
//! no accounts and never sees plaintext: everything it stores is addressed by
//! the BLAKE3 hash of its ciphertext ([`cairn_proto::BlobId`]).
//!
//! This crate is being built up issue by issue; see docs/ARCHITECTURE.md for
//! the parts it will own (HTTP API, blob store, index, GC, federation).

/// The software name and version a relay reports in its info document.
pub const SOFTWARE: &str = concat!("cairn-relay ", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    #[test]
    fn software_version_is_a_valid_protocol_field() {
        assert!(cairn_proto::SoftwareVersion::new(super::SOFTWARE).is_ok());
    }
}
