//! Test vectors: `tests/vectors/*.json` are generated here from fixed seeds
//! and committed. The test regenerates them and fails on any difference, so
//! docs/PROTOCOL.md, the committed vectors and the code cannot drift apart.
//!
//! To accept an intended format change, regenerate them:
//!
//! ```text
//! CAIRN_UPDATE_VECTORS=1 cargo test -p cairn-proto --test proto vectors
//! ```

use std::path::PathBuf;

use cairn_proto::{
    AuthToken, BlindingFactor, BlobId, DeviceCertificate, FairShareLimits, HeadRecord,
    IdentityLogEntry, LogAction, Record, RelayInfo, RelayRef, Revocation, SignedRecord, Signer,
    SigningKey, TokenTarget, TransferReceipt, encode_base64url, verify_identity_log,
};
use cairn_testkit::{IdentityBuilder, key, seed};
use serde_json::{Value, json};

use crate::common::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn relay_json(r: &RelayRef) -> Value {
    json!({ "url": r.url.as_str(), "key": r.key.to_string() })
}

/// The fields of a record as JSON, for people reading the vectors.
trait Fields {
    fn fields(&self) -> Value;
}

impl Fields for DeviceCertificate {
    fn fields(&self) -> Value {
        json!({
            "device": self.device.to_string(),
            "x25519": self.x25519.to_string(),
            "name": self.name.as_str(),
            "created": self.created.0,
        })
    }
}

impl Fields for Revocation {
    fn fields(&self) -> Value {
        json!({
            "device": self.device.to_string(),
            "revoked_at": self.revoked_at.0,
            "reason": format!("{:?}", self.reason),
        })
    }
}

impl Fields for IdentityLogEntry {
    fn fields(&self) -> Value {
        let action = match &self.action {
            LogAction::AddDevice {
                certificate,
                vault_key,
            } => json!({
                "add_device": {
                    "certificate_hex": hex(&certificate.to_bytes()),
                    "vault_key": vault_key.as_ref().map(|k| json!({
                        "generation": k.generation,
                        "secret_hex": hex(k.secret.as_bytes()),
                    })),
                }
            }),
            LogAction::RevokeDevice { revocation } => json!({
                "revoke_device": { "revocation_hex": hex(&revocation.to_bytes()) }
            }),
            LogAction::RotateVaultKey {
                generation,
                recipient,
                wrapped,
                previous,
            } => json!({
                "rotate_vault_key": {
                    "generation": generation,
                    "recipient": recipient.to_string(),
                    "wrapped": wrapped.iter().map(|w| json!({
                        "device": w.device.to_string(),
                        "secret_hex": hex(w.secret.as_bytes()),
                    })).collect::<Vec<_>>(),
                    "previous_hex": previous.as_ref().map(|p| hex(p.as_bytes())),
                }
            }),
            LogAction::SetPreferredRelays { relays } => json!({
                "set_preferred_relays": relays.iter().map(relay_json).collect::<Vec<_>>()
            }),
            _ => unreachable!("every action of this version is listed"),
        };
        json!({
            "seq": self.seq,
            "prev": self.prev.map(|p| p.to_string()),
            "action": action,
        })
    }
}

impl Fields for HeadRecord {
    fn fields(&self) -> Value {
        json!({
            "mailbox": self.mailbox.to_string(),
            "slot": self.slot.as_str(),
            "seq": self.seq,
            "target": self.target.to_string(),
            "timestamp": self.timestamp.0,
        })
    }
}

impl Fields for cairn_proto::OwnedHead {
    fn fields(&self) -> Value {
        json!({
            "mailbox": self.mailbox.to_string(),
            "slot": self.slot.as_str(),
            "seq": self.seq,
            "target": self.target.to_string(),
            "timestamp": self.timestamp.0,
            "grant_hex": hex(&self.grant.to_bytes()),
        })
    }
}

fn limits_json(l: &FairShareLimits) -> Value {
    json!({
        "key_quota_bytes": l.key_quota_bytes,
        "key_requests_per_min": l.key_requests_per_min,
        "addr_requests_per_min": l.addr_requests_per_min,
        "pow_bits": l.pow_bits,
    })
}

impl Fields for RelayInfo {
    fn fields(&self) -> Value {
        json!({
            "relay": self.relay.to_string(),
            "software": self.software.as_str(),
            "issued_at": self.issued_at.0,
            "capacity_total": self.capacity_total,
            "capacity_used": self.capacity_used,
            "capacity_free": self.capacity_free,
            "max_blob_size": self.max_blob_size,
            "retention_secs": self.retention_secs,
            "limits": limits_json(&self.limits),
            "peers": self.peers.iter().map(relay_json).collect::<Vec<_>>(),
            "load_permille": self.load_permille,
            "uptime_secs": self.uptime_secs,
        })
    }
}

impl Fields for AuthToken {
    fn fields(&self) -> Value {
        let target = match &self.target {
            TokenTarget::Blob(id) => json!({ "blob": id.to_string() }),
            TokenTarget::Path(p) => json!({ "path": p.as_str() }),
            TokenTarget::Batch(d) => json!({ "batch_digest_hex": hex(&d.0) }),
            _ => unreachable!("every target of this version is listed"),
        };
        json!({
            "audience": self.audience.to_string(),
            "method": self.method.as_str(),
            "target": target,
            "expires_at": self.expires_at.0,
            "nonce_hex": hex(&self.nonce.0),
            "stamp": self.stamp,
        })
    }
}

impl Fields for TransferReceipt {
    fn fields(&self) -> Value {
        json!({
            "receiver": self.receiver.to_string(),
            "sender": self.sender.to_string(),
            "blob": self.blob.to_string(),
            "size": self.size,
            "received_at": self.received_at.0,
        })
    }
}

impl Fields for cairn_proto::Operation {
    fn fields(&self) -> Value {
        json!({
            "device": self.device.to_string(),
            "seq": self.seq,
            "prev": self.prev.map(|p| p.to_string()),
            "clock": self.clock,
            "body_hex": hex(&self.body),
        })
    }
}

/// One signed-record vector: the inputs, every intermediate byte string and
/// the outputs.
fn record_vector<R: Record + Fields>(name: &str, signer_label: &str, record: &R) -> Value {
    let signer = key(signer_label);
    let envelope = SignedRecord::sign(record, &signer).unwrap();
    json!({
        "name": name,
        "kind": R::KIND.name(),
        "kind_code": R::KIND.code(),
        "signer_seed_hex": hex(&seed(signer_label)),
        "signer": signer.verifying_key().to_string(),
        "fields": record.fields(),
        "payload_hex": hex(envelope.payload()),
        "signing_input_hex": hex(&envelope.signing_input()),
        "signature_hex": hex(&envelope.signature().to_bytes()),
        "envelope_hex": hex(&envelope.to_bytes()),
        "envelope_base64url": envelope.to_base64url(),
    })
}

fn file(kind: &str, vectors: Vec<Value>) -> Value {
    json!({
        "description": format!(
            "cairn {kind} test vectors; see docs/PROTOCOL.md. Signer keys are \
             Ed25519 keys whose 32-byte seed is signer_seed_hex."
        ),
        "vectors": vectors,
    })
}

fn blob_id_vectors() -> Value {
    let inputs: [&[u8]; 3] = [b"", b"cairn", &[0u8; 1025]];
    json!({
        "description": "BlobId = BLAKE3-256 of the stored bytes; text form is 64 lowercase hex characters.",
        "vectors": inputs.iter().map(|data| json!({
            "data_hex": hex(data),
            "id": BlobId::of(data).to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn key_vectors() -> Value {
    let labels = ["root", "laptop", "relay a"];
    let x = x25519("laptop x25519");
    let x25519_vectors = vec![json!({
        "public_hex": hex(&x.to_bytes()),
        "public": x.to_string(),
    })];
    json!({
        "description": "Ed25519 keys from 32-byte seeds (RFC 8032), and X25519 public keys, in their text forms.",
        "ed25519": labels.iter().map(|label| {
            let k = key(label);
            json!({
                "seed_hex": hex(&seed(label)),
                "public": k.verifying_key().to_string(),
                "public_hex": hex(&k.verifying_key().to_bytes()),
                "secret": k.to_secret_text(),
            })
        }).collect::<Vec<_>>(),
        "x25519": x25519_vectors,
    })
}

fn blinded_key_vectors() -> Value {
    let vectors: Vec<Value> = [("laptop", 1u8), ("laptop", 2), ("desktop", 1)]
        .iter()
        .map(|(label, byte)| {
            let wide = [*byte; 64];
            let factor = BlindingFactor::from_wide(&wide).unwrap();
            let device = key(label);
            let blinded = device.blind(&factor);
            // The envelope carries the signature over the record's signing
            // input, so a signed record shows it.
            let record = sample_certificate();
            let signed = SignedRecord::sign(&record, &blinded).unwrap();
            json!({
                "seed_hex": hex(&seed(label)),
                "factor_wide_hex": hex(&wide),
                "blinded_public": Signer::verifying_key(&blinded).to_string(),
                "blinded_public_from_public": device.verifying_key().blind(&factor).to_string(),
                "signed_certificate_hex": hex(&signed.to_bytes()),
            })
        })
        .collect();
    json!({
        "description": "Blinded Ed25519 keys (PROTOCOL.md §10.1): factor h = the 64 bytes reduced mod l; public h*A, secret scalar h*a, nonce prefix derive(\"cairn/v1 blinded signing nonce prefix\", prefix || h). The signed certificate is an ordinary envelope signed by the blinded key.",
        "vectors": vectors,
    })
}

fn stamped_token() -> (AuthToken, SigningKey) {
    let signer = key("laptop");
    let mut token = sample_token();
    assert!(token.mint_stamp(&signer.verifying_key(), 8, 1 << 20));
    (token, signer)
}

fn identity_log_vectors() -> Value {
    let root = key("root");
    let (laptop, phone) = (key("laptop"), key("phone"));
    let mut log = IdentityBuilder::new(root.clone());
    log.add_device(&root, &laptop, "laptop")
        .rotate(&root, &[&laptop])
        .add_device(&root, &phone, "phone")
        .set_relays(&phone, vec![relay_ref("relay a", "https://a.example")])
        .revoke(&laptop, &phone)
        .rotate(&root, &[&laptop]);
    let state = verify_identity_log(&root.verifying_key(), log.entries()).unwrap();
    let mut tampered = log.entries().to_vec();
    tampered.remove(2);
    let mut by_revoked = IdentityBuilder::new(root.clone());
    for e in log.entries() {
        by_revoked.push_raw(e.clone());
    }
    by_revoked.set_relays(&phone, vec![]);
    json!({
        "description": "A valid identity log (envelope bytes of each entry, in order) and the state it leads to; then invalid variants and the error each must produce.",
        "root": root.verifying_key().to_string(),
        "entries_hex": log.entries().iter().map(|e| hex(e)).collect::<Vec<_>>(),
        "entry_ids": log.entries().iter().map(|e| BlobId::of(e).to_string()).collect::<Vec<_>>(),
        "state": {
            "active_devices": state.devices().keys().map(ToString::to_string).collect::<Vec<_>>(),
            "revoked": state.revoked().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "vault_needs_rotation": state.vault_needs_rotation(),
            "vault_generation": state.vault().map(|v| v.generation),
            "vault_recipient": state.vault().map(|v| v.recipient.to_string()),
            "preferred_relays": state.preferred_relays().iter().map(relay_json).collect::<Vec<_>>(),
            "head": state.head().to_string(),
        },
        "invalid": [
            {
                "description": "entry 2 removed",
                "entries_hex": tampered.iter().map(|e| hex(e)).collect::<Vec<_>>(),
                "error": verify_identity_log(&root.verifying_key(), &tampered).unwrap_err().to_string(),
            },
            {
                "description": "the revoked phone appends an entry",
                "entries_hex": by_revoked.entries().iter().map(|e| hex(e)).collect::<Vec<_>>(),
                "error": verify_identity_log(&root.verifying_key(), by_revoked.entries()).unwrap_err().to_string(),
            },
        ],
    })
}

fn all_files() -> Vec<(&'static str, Value)> {
    let (stamped, stamp_signer) = stamped_token();
    let stamped_vector = {
        let mut v = record_vector(
            "put token with an 8-bit proof-of-work stamp",
            "laptop",
            &stamped,
        );
        v["stamp_bits"] = json!(stamped.stamp_bits(&stamp_signer.verifying_key()));
        v
    };
    let batch_vector = {
        let header = sample_batch_header();
        let mut v = record_vector(
            "batch upload of two blobs",
            "laptop",
            &sample_batch_token(&header),
        );
        // What the digest is of, so that it can be computed again
        // (PROTOCOL.md §7.3): the ids in order, and the header's bytes.
        v["batch_ids"] = json!(
            header
                .entries()
                .iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
        );
        v["batch_header_hex"] = json!(hex(&header.encode()));
        v
    };
    vec![
        ("blob_id", blob_id_vectors()),
        ("keys", key_vectors()),
        ("blinded_keys", blinded_key_vectors()),
        (
            "device_certificate",
            file(
                "device-certificate",
                vec![record_vector("laptop", "root", &sample_certificate())],
            ),
        ),
        (
            "revocation",
            file(
                "revocation",
                vec![record_vector(
                    "phone compromised",
                    "root",
                    &sample_revocation(),
                )],
            ),
        ),
        (
            "identity_log_entry",
            file(
                "identity-log-entry",
                vec![
                    record_vector("add device with vault key", "root", &sample_log_entry()),
                    record_vector("rotate vault key", "laptop", &sample_rotation_entry()),
                ],
            ),
        ),
        (
            "head",
            file(
                "head",
                vec![record_vector("laptop head", "mailbox", &sample_head())],
            ),
        ),
        (
            "owned_head",
            file(
                "owned-head",
                vec![record_vector(
                    "laptop's own id head",
                    "laptop",
                    &sample_owned_head(),
                )],
            ),
        ),
        (
            "relay_info",
            file(
                "relay-info",
                vec![record_vector("relay a", "relay a", &sample_relay_info())],
            ),
        ),
        (
            "auth_token",
            file(
                "auth-token",
                vec![
                    record_vector("put blob", "laptop", &sample_token()),
                    record_vector("get path", "laptop", &sample_path_token()),
                    stamped_vector,
                    batch_vector,
                ],
            ),
        ),
        (
            "transfer_receipt",
            file(
                "transfer-receipt",
                vec![record_vector("a to b", "relay b", &sample_receipt())],
            ),
        ),
        (
            "operation",
            file(
                "operation",
                vec![record_vector(
                    "laptop's 7th operation",
                    "laptop",
                    &sample_operation(),
                )],
            ),
        ),
        ("identity_log", identity_log_vectors()),
    ]
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
fn committed_vectors_match_the_code() {
    let update = std::env::var_os("CAIRN_UPDATE_VECTORS").is_some();
    let mut stale = Vec::new();
    for (name, value) in all_files() {
        let path = vectors_dir().join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "test vectors differ from what the code produces: {stale:?}\n\
         If the format change is intended, update docs/PROTOCOL.md and run\n\
         CAIRN_UPDATE_VECTORS=1 cargo test -p cairn-proto --test proto vectors"
    );
}

/// Replays the committed identity log: the valid log leads to the recorded
/// state, and each invalid variant fails with the recorded error.
#[test]
fn committed_identity_log_verifies() {
    let text = std::fs::read_to_string(vectors_dir().join("identity_log.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let root: cairn_proto::VerifyingKey = file["root"].as_str().unwrap().parse().unwrap();
    let entries = |v: &Value| -> Vec<Vec<u8>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| unhex(e.as_str().unwrap()))
            .collect()
    };
    let state = verify_identity_log(&root, entries(&file["entries_hex"])).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let active: Vec<String> = state.devices().keys().map(ToString::to_string).collect();
    assert_eq!(active, strings(&file["state"]["active_devices"]));
    let revoked: Vec<String> = state.revoked().iter().map(ToString::to_string).collect();
    assert_eq!(revoked, strings(&file["state"]["revoked"]));
    assert_eq!(
        state.vault().map(|v| u64::from(v.generation)),
        file["state"]["vault_generation"].as_u64()
    );
    assert_eq!(state.head().to_string(), file["state"]["head"]);
    for bad in file["invalid"].as_array().unwrap() {
        let err = verify_identity_log(&root, entries(&bad["entries_hex"])).unwrap_err();
        assert_eq!(err.to_string(), bad["error"], "{}", bad["description"]);
    }
}

/// Reads the committed files (not the generator) and checks each envelope
/// independently: it decodes, verifies, re-encodes to the same bytes, and
/// its parts are what the vector says.
#[test]
fn committed_envelopes_decode_and_verify() {
    let mut checked = 0;
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap();
        let Some(vectors) = file["vectors"].as_array() else {
            continue;
        };
        for v in vectors.iter().filter(|v| v.get("envelope_hex").is_some()) {
            let bytes = unhex(v["envelope_hex"].as_str().unwrap());
            let envelope = SignedRecord::from_bytes(&bytes).unwrap();
            assert_eq!(envelope.to_bytes(), bytes);
            assert_eq!(envelope.kind().name(), v["kind"]);
            assert_eq!(hex(envelope.payload()), v["payload_hex"]);
            assert_eq!(hex(&envelope.signing_input()), v["signing_input_hex"]);
            assert_eq!(encode_base64url(&bytes), v["envelope_base64url"]);
            let signer = SigningKey::from_seed(
                &unhex(v["signer_seed_hex"].as_str().unwrap())
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(envelope.signer(), &signer.verifying_key());
            let ok = match envelope.kind().name() {
                "device-certificate" => envelope.verify::<DeviceCertificate>().is_ok(),
                "revocation" => envelope.verify::<Revocation>().is_ok(),
                "identity-log-entry" => envelope.verify::<IdentityLogEntry>().is_ok(),
                "head" => envelope.verify::<HeadRecord>().is_ok(),
                "relay-info" => envelope.verify::<RelayInfo>().is_ok(),
                "auth-token" => envelope.verify::<AuthToken>().is_ok(),
                "transfer-receipt" => envelope.verify::<TransferReceipt>().is_ok(),
                "operation" => envelope.verify::<cairn_proto::Operation>().is_ok(),
                "owned-head" => envelope.verify::<cairn_proto::OwnedHead>().is_ok(),
                other => panic!("unexpected kind {other}"),
            };
            assert!(ok, "vector {} does not verify", v["name"]);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} envelopes found");
}
