//! What a client reads from relays and from people: sealed blobs, sync
//! records, pairing messages and codes.

use cairn_client::PairingCode;
use cairn_client::crdt::{Change, Snapshot};
use cairn_client::keys::X25519Secret;
use cairn_client::seal::{open_bytes, seal_bytes};

/// A sealed blob as a relay might serve it (age, padding, length trailer):
/// no panic, and nothing opens without the right key. The same bytes,
/// sealed as data, come back exactly.
pub fn sealed_blob(data: &[u8]) {
    let key = X25519Secret::from_bytes([7; 32]);
    let _ = open_bytes(data, std::slice::from_ref(&key));
    let (_, sealed) = seal_bytes(data, &key.public()).expect("sealing to memory");
    let opened = open_bytes(&sealed, std::slice::from_ref(&key)).expect("own seal opens");
    assert_eq!(opened, data, "round trip changed the data");
}

/// A decrypted operation body and a decrypted snapshot: whatever parses
/// survives a round trip unchanged, and merges into a table without
/// panicking, twice to the same result (a folder's writes included: paths
/// that could leave the folder are dropped there).
pub fn sync_json(data: &[u8]) {
    if let Ok(change) = Change::from_body(data) {
        assert_eq!(
            Change::from_body(&change.to_body()).expect("own output parses"),
            change
        );
        let device = cairn_client::proto::SigningKey::from_seed(&[3; 32]).verifying_key();
        let mut table = cairn_client::crdt::Table::default();
        table.apply(device, 7, &change);
        let once = table.clone();
        table.apply(device, 7, &change);
        assert_eq!(table, once, "applying a change twice changed the table");
        for tree in table.folders().values() {
            for path in tree.slots().keys() {
                assert!(
                    cairn_client::crdt::folder::check_path(path).is_ok(),
                    "{path:?}"
                );
            }
        }
    }
    if let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) {
        let text = serde_json::to_vec(&snapshot).expect("serializes");
        let again: Snapshot = serde_json::from_slice(&text).expect("own output parses");
        assert_eq!(again, snapshot);
    }
}

/// Every pairing message as a relay in the middle could forge it: no
/// panic, and no forged reply, confirm or welcome passes.
pub fn pairing_messages(data: &[u8]) {
    cairn_client::fuzzing::pairing_messages(data);
}

/// Pairing-code text as a person types it: whatever parses prints back to a
/// form that parses to the same code.
pub fn pairing_code(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = PairingCode::parse(text)
    {
        let again = PairingCode::parse(&code.to_string()).expect("printed code parses");
        assert!(again == code);
    }
}

/// The plaintext inside an identity-log copy (PROTOCOL.md §10.7): no panic
/// parsing or verifying it, and whatever opens round-trips.
pub fn log_copy(data: &[u8]) {
    cairn_client::fuzzing::log_copy(data);
}

/// A chunked file's manifest plaintext (PROTOCOL.md §10.8): no panic, and
/// whatever decodes re-encodes to exactly the input and covers its size.
pub fn manifest(data: &[u8]) {
    use cairn_client::manifest::Manifest;
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(manifest.encode(), data);
        let sum: u64 = manifest.chunks().iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(sum, manifest.size());
        assert_eq!(
            manifest.covering(0, manifest.size()).count(),
            manifest.chunks().len()
        );
    }
}

/// The plaintext inside a per-relay metadata copy (PROTOCOL.md §10.7): no
/// panic opening it, and whatever opens round-trips.
pub fn relay_copy(data: &[u8]) {
    cairn_client::fuzzing::relay_copy(data);
}
