#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from the committed test vectors.

Random bytes rarely get past a length prefix, and never past a signature;
starting from valid records lets the fuzzer spend its time on the paths
that matter. Run from the repository root: python3 fuzz/seed-corpus.py
"""
import base64
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "crates/proto/tests/vectors"
CORPUS = ROOT / "fuzz/corpus"

KIND_TO_TARGET = {
    "device-certificate": "device_certificate",
    "revocation": "revocation",
    "identity-log-entry": "identity_log_entry",
    "head": "head",
    "relay-info": "relay_info",
    "auth-token": "auth_token",
    "transfer-receipt": "transfer_receipt",
    "operation": "operation",
    "owned-head": "owned_head",
}


def write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def key_bytes(text: str) -> bytes:
    body = text.split(":", 1)[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def audit_proof_len(size: int, picks: list) -> int:
    """Length of a storage-audit proof (docs/PROTOCOL.md §7.9)."""
    if size <= 1024:
        return size  # a single chunk: the blob itself
    chunks = sorted({p % -(-size // 1024) for p in picks})

    def walk(offset: int, length: int) -> int:
        if not any(offset <= c * 1024 < offset + length for c in chunks):
            return 32
        if length <= 1024:
            return length
        left = 1 << (-(-length // 2) - 1).bit_length()
        return walk(offset, left) + walk(offset + left, length - left)

    return walk(0, size)


def main() -> None:
    count = 0
    for path in sorted(VECTORS.glob("*.json")):
        data = json.loads(path.read_text())
        for i, v in enumerate(data.get("vectors", [])):
            if "envelope_hex" in v:
                envelope = bytes.fromhex(v["envelope_hex"])
                write(KIND_TO_TARGET[v["kind"]], f"{path.stem}-{i}", bytes.fromhex(v["payload_hex"]))
                write("envelope", f"{path.stem}-{i}", envelope)
                write("envelope_base64url", f"{path.stem}-{i}", v["envelope_base64url"].encode())
                count += 3
            if "id" in v:
                write("blob_id_text", f"{path.stem}-{i}", v["id"].encode())
                count += 1
        for i, k in enumerate(data.get("ed25519", [])):
            write("key_text", f"ed25519-{i}", k["public"].encode())
            write("key_text", f"secret-{i}", k["secret"].encode())
            count += 2
        for i, k in enumerate(data.get("x25519", [])):
            write("key_text", f"x25519-{i}", k["public"].encode())
            count += 1
        if "entries_hex" in data:
            logs = [data["entries_hex"]] + [bad["entries_hex"] for bad in data["invalid"]]
            root = key_bytes(data["root"])
            for i, entries in enumerate(logs):
                blob = root + b"".join(
                    struct.pack(">H", len(bytes.fromhex(e))) + bytes.fromhex(e) for e in entries
                )
                write("identity_log", f"log-{i}", blob)
                for j, e in enumerate(entries):
                    write("envelope", f"log-{i}-{j}", bytes.fromhex(e))
                    count += 1
                count += 1
    # Client-side parsers: hand-written seeds of each shape.
    key = "ed25519:" + "A" * 43
    blob = "0" * 64
    put = (
        '{"op":"put","name":"notes.txt","entry":{"blob":"%s","size":5,"sealed_size":300,'
        '"generation":1,"stored_at":1795000000,"copies":[{"url":"http://127.0.0.1:7070",'
        '"relay":"%s","owner":"%s"}]}}' % (blob, key, key)
    )
    write("sync_json", "put", put.encode())
    write("sync_json", "snapshot", ("{\"table\":{\"registers\":{}},\"clock\":5}").encode())
    write("sync_json", "remove", b'{"op":"remove","name":"notes.txt"}')
    for name, text in [("dashed", "K7QF-9XM2-PT4R"), ("lower", "k7qf 9xm2 pt4r"), ("lookalikes", "O1IL-0000-0000")]:
        write("pairing_code", name, text.encode())
    hello = '{"spake":"AAAA","device":"%s","x25519":"x25519:%s","name":"phone"}' % (key, "A" * 43)
    for name, text in [("hello", hello), ("reply", '{"spake":"AAAA","confirm":"AAAA"}'),
                       ("confirm", '{"confirm":"AAAA"}'), ("welcome", '{"sealed":"AAAA"}')]:
        write("pairing_messages", name, text.encode())
    write("sealed_blob", "age-header", b"age-encryption.org/v1\n-> X25519 AAAA\nAAAA\n--- AAAA\n")
    count += 11
    # Reconciliation messages, behind the target's frame-limit byte (odd:
    # 1 MiB frames, even: the smallest). Layout: docs/PROTOCOL.md.
    version, fp = b"\x01", b"\xaa" * 16
    ends = [0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0]
    split = b"".join(bytes([0x41, e]) + fp for e in ends) + b"\x40" + fp
    ids = [bytes([0x10 * (i + 1)]) * 32 for i in range(3)]
    seeds = {
        "skip-all": version + b"\x00",
        "fingerprint-all": version + b"\x40" + fp,
        "split": version + split,
        "skip-then-fingerprint": version + b"\x01\x80\x40" + fp,
        "id-list-empty": version + b"\x80\x00\x00",
        "id-list": version + b"\x80\x00\x03" + b"".join(ids),
        "id-list-response": version + b"\xc0\x00\x01" + ids[0] + b"\x00\x03\x05",
    }
    for name, msg in seeds.items():
        write("reconcile_message", name, b"\x01" + msg)
        write("reconcile_message", name + "-small-frames", b"\x00" + msg)
    count += 2 * len(seeds)
    # Storage-audit proofs: shape byte (bit 7 clear: size mod 64 KiB + 1;
    # bits 0-2: picks - 1), size u64 LE, picks u16 LE each, then the proof,
    # here of exactly the length the request implies so that the verifier
    # gets past its length check. Layout: docs/PROTOCOL.md §7.9.
    for name, size, picks in [
        ("empty", 0, [0]),
        ("one-chunk", 1000, [0]),
        ("two-chunks", 1025, [1]),
        ("three-chunks", 3000, [1]),
        ("spread", 40_000, [0, 7, 39]),
        ("all-of-eight", 8 * 1024, list(range(8))),
        ("large", (1 << 30) + 5, [3, 999, 65535]),
    ]:
        shape = (len(picks) - 1) | (0x80 if size > 64 * 1024 else 0)
        head = bytes([shape]) + struct.pack("<Q", size) + b"".join(struct.pack("<H", p) for p in picks)
        n = audit_proof_len(size, picks)
        write("audit_proof", name, head + bytes(i % 251 for i in range(n)))
        count += 1
    for name, text in [("list", "0,17,4095"), ("zero", "0"), ("max", ",".join(str((1 << 54) - 64 + i) for i in range(64)))]:
        write("audit_proof", "query-" + name, text.encode())
        count += 1
    print(f"wrote {count} seed inputs under {CORPUS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
