//! Pairing a new device with a device that holds the root key, through the
//! user's relays, protected by a short code and a PAKE (SPAKE2).
//!
//! The new device ("joiner") shows a code like `K7QF-9XM2-PT4R-H3JD` (16
//! characters of Crockford base32, 80 bits). The first 8 characters (40
//! bits) name a rendezvous mailbox; the other 8 are the SPAKE2 password.
//! Strangers cannot list or write pairing requests, since they would have to
//! guess the rendezvous among 2^40; the relay, which sees the mailbox, finds
//! in it only a SPAKE2 message and sealed, padded bytes. The password never
//! leaves the two devices, and an active attacker gets one online guess at
//! 40 bits per pairing attempt.
//!
//! Four messages, each a blob plus a head in its own slot of the
//! rendezvous mailbox:
//!
//! 1. `pair-hello`   joiner → approver: SPAKE2 message
//! 2. `pair-reply`   approver → joiner: SPAKE2 message, approver's MAC
//! 3. `pair-confirm` joiner → approver: joiner's MAC, and its device keys
//!    and name sealed under the PAKE key (which proves they came from
//!    whoever knows the code, and shows them to nobody else)
//! 4. `pair-welcome` approver → joiner: root key, identity-log head and relay
//!    set, sealed under the PAKE key
//!
//! Both MACs cover the transcript (message 1 and the approver's SPAKE2
//! message), so nothing in it can be swapped unnoticed. Sealed parts are
//! ChaCha20-Poly1305, each under its own key (so the zero nonce is used
//! once per key), of a Padmé-padded plaintext: their lengths say little.

use serde::{Deserialize, Serialize};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::Zeroizing;

use cairn_proto::{BlobId, SigningKey, Slot, VerifyingKey, X25519PublicKey};

use crate::error::{Error, Result};
use crate::keys::DeviceKeys;

/// Crockford's base32 alphabet: no I, L, O or U to misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code (without dashes).
const CODE_LEN: usize = 16;
/// Characters naming the rendezvous mailbox.
const CHANNEL_LEN: usize = 8;
/// Characters in the codes of the previous release, refused with a hint.
const OLD_CODE_LEN: usize = 12;
/// Largest pairing message accepted: a welcome carries the whole identity
/// log (up to `MAX_SEALED_LOG` bytes, base64url inside sealed JSON).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// The four slots of a rendezvous mailbox.
pub(crate) fn slot(step: Step) -> Slot {
    let name = match step {
        Step::Hello => "pair-hello",
        Step::Reply => "pair-reply",
        Step::Confirm => "pair-confirm",
        Step::Welcome => "pair-welcome",
    };
    #[allow(clippy::expect_used, reason = "constant valid slot names")]
    Slot::new(name).expect("valid slot")
}

/// A message of the pairing exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Hello,
    Reply,
    Confirm,
    Welcome,
}

/// A pairing code.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(Zeroizing<String>);

impl PairingCode {
    /// A fresh random code.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; CODE_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|err| Error::Invalid(format!("no randomness from the OS: {err}")))?;
        let text: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
            .collect();
        Ok(Self(Zeroizing::new(text)))
    }

    /// Parses a code as a person types it: any case, dashes and spaces
    /// ignored, and the look-alikes O→0, I/L→1 accepted.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = String::with_capacity(CODE_LEN);
        for c in text.chars().filter(|c| !matches!(c, '-' | ' ')) {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return Err(bad_code());
            }
            out.push(c);
        }
        if out.len() == OLD_CODE_LEN {
            return Err(Error::Invalid(
                "this 12-character code comes from an older cairn, whose pairing this one no \
                 longer speaks: update cairn on the new device and run `cairn device join` again"
                    .into(),
            ));
        }
        if out.len() != CODE_LEN {
            return Err(bad_code());
        }
        Ok(Self(Zeroizing::new(out)))
    }

    /// The rendezvous mailbox key.
    pub(crate) fn mailbox(&self) -> SigningKey {
        SigningKey::from_seed(&blake3::derive_key(
            "cairn/v1 pairing rendezvous",
            self.0[..CHANNEL_LEN].as_bytes(),
        ))
    }

    fn password(&self) -> Password {
        Password::new(self.0[CHANNEL_LEN..].as_bytes())
    }
}

impl std::fmt::Display for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}",
            &self.0[..4],
            &self.0[4..8],
            &self.0[8..12],
            &self.0[12..]
        )
    }
}

impl std::fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingCode(…)")
    }
}

fn bad_code() -> Error {
    Error::Invalid(format!(
        "not a pairing code: expected {CODE_LEN} characters like K7QF-9XM2-PT4R-H3JD, as `cairn \
         device join` shows"
    ))
}

fn spake_identity() -> Identity {
    Identity::new(b"cairn/v1 device pairing")
}

/// Message 1.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    spake: String,
}

/// What the joining device asks to be enrolled as, sealed in message 3.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinerInfo {
    /// The joining device's signing key.
    #[serde(with = "crate::text_serde")]
    pub(crate) device: VerifyingKey,
    /// Its X25519 key.
    #[serde(with = "crate::text_serde")]
    pub(crate) x25519: X25519PublicKey,
    /// The name it asks for.
    pub(crate) name: String,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    spake: String,
    confirm: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    confirm: String,
    /// [`JoinerInfo`], sealed.
    sealed: String,
}

/// Sent in place of message 3 when the approver's MAC did not verify, so
/// the approver stops waiting at once. It carries nothing secret, and a
/// forged one can only end a pairing that an attacker could stall anyway.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Abort {
    abort: String,
}

/// Message 3 when pairing failed on the joiner's side.
pub(crate) fn abort_message() -> Vec<u8> {
    to_json(&Abort {
        abort: "the key exchange did not verify".into(),
    })
}

#[derive(Serialize, Deserialize)]
struct Welcome {
    sealed: String,
}

/// What the approver tells the new device, sealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WelcomeBody {
    /// The identity's root key.
    #[serde(with = "crate::text_serde")]
    pub(crate) root: VerifyingKey,
    /// The identity-log entry that enrolled the new device (or a later one).
    #[serde(with = "crate::text_serde")]
    pub(crate) head: BlobId,
    /// The relay set, with pinned keys.
    pub(crate) relays: Vec<crate::relay::RelayEntry>,
    /// The whole identity log, entry by entry (base64url): in the
    /// per-relay layout the relays hold it sealed to the vault key, which
    /// the new device only learns from the log. Absent from an approver of
    /// an earlier release, whose relays hold the entries in plain.
    #[serde(default)]
    pub(crate) log: Vec<String>,
    /// The first vault generation in the per-relay layout, if any.
    #[serde(default)]
    pub(crate) per_relay_from: Option<u32>,
}

/// Keys both sides derive from the PAKE result and the transcript.
struct SessionKeys {
    approver_mac: Zeroizing<[u8; 32]>,
    joiner_mac: Zeroizing<[u8; 32]>,
    seal: Zeroizing<[u8; 32]>,
    joiner_seal: Zeroizing<[u8; 32]>,
    transcript: [u8; 32],
}

impl SessionKeys {
    fn derive(shared: &[u8], hello: &[u8], approver_spake: &[u8]) -> Self {
        let mut transcript = blake3::Hasher::new_derive_key("cairn/v1 pairing transcript");
        transcript.update(&(hello.len() as u64).to_be_bytes());
        transcript.update(hello);
        transcript.update(approver_spake);
        let transcript = *transcript.finalize().as_bytes();
        let key = |context: &str| {
            let mut input = Zeroizing::new(Vec::with_capacity(shared.len() + 32));
            input.extend_from_slice(shared);
            input.extend_from_slice(&transcript);
            Zeroizing::new(blake3::derive_key(context, &input))
        };
        Self {
            approver_mac: key("cairn/v1 pairing approver mac"),
            joiner_mac: key("cairn/v1 pairing joiner mac"),
            seal: key("cairn/v1 pairing welcome seal"),
            joiner_seal: key("cairn/v1 pairing joiner seal"),
            transcript,
        }
    }

    fn mac(key: &[u8; 32], transcript: &[u8; 32]) -> blake3::Hash {
        blake3::keyed_hash(key, transcript)
    }
}

/// Seals `value`'s JSON, Padmé-padded (PROTOCOL.md §10.3's layout: data,
/// zeros, then the data's length as a u64), under `key`. Each key seals one
/// message, so the zero nonce is never reused.
fn seal_json<T: Serialize>(key: &[u8; 32], value: &T) -> Result<String> {
    let plain = Zeroizing::new(to_json(value));
    // Each session key seals one message, so the zero nonce is never reused.
    Ok(b64(&crate::seal::seal_small(key, &[0; 12], &plain)))
}

/// Opens what [`seal_json`] sealed; `what` names the message in errors.
fn open_json<T: for<'de> Deserialize<'de>>(key: &[u8; 32], sealed: &str, what: &str) -> Result<T> {
    let plain = crate::seal::open_small(key, &[0; 12], &unb64(sealed)?)
        .map_err(|err| protocol(&format!("the {what} message {err}")))?;
    parse(&plain, what)
}

fn b64(bytes: &[u8]) -> String {
    cairn_proto::encode_base64url(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>> {
    cairn_proto::decode_base64url(text, MAX_MESSAGE).map_err(|_| protocol("bad base64"))
}

fn protocol(why: &str) -> Error {
    Error::Invalid(format!("pairing failed: {why}"))
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|_| protocol(&format!("malformed {what} message")))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn mac_matches(expected: blake3::Hash, text: &str) -> Result<bool> {
    let bytes: [u8; 32] = unb64(text)?
        .try_into()
        .map_err(|_| protocol("a MAC of the wrong length"))?;
    // blake3::Hash compares in constant time.
    Ok(expected == blake3::Hash::from_bytes(bytes))
}

/// The new device's side.
pub(crate) struct Joiner {
    code: PairingCode,
    spake: Spake2<Ed25519Group>,
    hello: Vec<u8>,
    info: JoinerInfo,
}

impl Joiner {
    /// Starts pairing for `device`; returns the state and message 1.
    pub(crate) fn start(code: PairingCode, device: &DeviceKeys, name: &str) -> (Self, Vec<u8>) {
        let (spake, message) =
            Spake2::<Ed25519Group>::start_symmetric(&code.password(), &spake_identity());
        let hello = to_json(&Hello {
            spake: b64(&message),
        });
        let info = JoinerInfo {
            device: device.signing.verifying_key(),
            x25519: device.x25519.public(),
            name: name.to_owned(),
        };
        (
            Self {
                code,
                spake,
                hello: hello.clone(),
                info,
            },
            hello,
        )
    }

    /// The code this pairing uses.
    pub(crate) fn code(&self) -> &PairingCode {
        &self.code
    }

    /// Takes message 2; returns message 3 and what opens message 4.
    pub(crate) fn on_reply(self, reply: &[u8]) -> Result<(Vec<u8>, WelcomeKey)> {
        let reply: Reply = parse(reply, "reply")?;
        let approver_spake = unb64(&reply.spake)?;
        let shared = Zeroizing::new(
            self.spake
                .finish(&approver_spake)
                .map_err(|_| protocol("bad key-exchange message"))?,
        );
        let keys = SessionKeys::derive(&shared, &self.hello, &approver_spake);
        let expected = SessionKeys::mac(&keys.approver_mac, &keys.transcript);
        if !mac_matches(expected, &reply.confirm)? {
            return Err(protocol(
                "the approving device used another code (or someone interfered); start again \
                 with `cairn device join`",
            ));
        }
        let confirm = SessionKeys::mac(&keys.joiner_mac, &keys.transcript);
        let message = to_json(&Confirm {
            confirm: b64(confirm.as_bytes()),
            sealed: seal_json(&keys.joiner_seal, &self.info)?,
        });
        Ok((message, WelcomeKey(keys.seal)))
    }
}

/// Opens message 4.
pub(crate) struct WelcomeKey(Zeroizing<[u8; 32]>);

impl WelcomeKey {
    pub(crate) fn open(&self, welcome: &[u8]) -> Result<WelcomeBody> {
        let welcome: Welcome = parse(welcome, "welcome")?;
        open_json(&self.0, &welcome.sealed, "welcome")
    }
}

/// The approving device's side, after message 1.
pub(crate) struct Approver {
    keys: SessionKeys,
}

impl Approver {
    /// Takes message 1; returns the state and message 2.
    pub(crate) fn on_hello(code: &PairingCode, hello_bytes: &[u8]) -> Result<(Self, Vec<u8>)> {
        let hello: Hello = parse(hello_bytes, "hello")?;
        let joiner_spake = unb64(&hello.spake)?;
        let (spake, message) =
            Spake2::<Ed25519Group>::start_symmetric(&code.password(), &spake_identity());
        let shared = Zeroizing::new(
            spake
                .finish(&joiner_spake)
                .map_err(|_| protocol("bad key-exchange message"))?,
        );
        let keys = SessionKeys::derive(&shared, hello_bytes, &message);
        let confirm = SessionKeys::mac(&keys.approver_mac, &keys.transcript);
        let reply = to_json(&Reply {
            spake: b64(&message),
            confirm: b64(confirm.as_bytes()),
        });
        Ok((Self { keys }, reply))
    }

    /// Takes message 3: succeeds only if the joiner knew the code, which
    /// proves the device keys sealed in it are its own; returns them.
    pub(crate) fn on_confirm(&self, confirm: &[u8]) -> Result<JoinerInfo> {
        if serde_json::from_slice::<Abort>(confirm).is_ok() {
            return Err(protocol(
                "the new device says the codes differ (or someone interfered); nothing was \
                 enrolled. Check the code and run both commands again",
            ));
        }
        let confirm: Confirm = parse(confirm, "confirm")?;
        let expected = SessionKeys::mac(&self.keys.joiner_mac, &self.keys.transcript);
        if !mac_matches(expected, &confirm.confirm)? {
            return Err(protocol(
                "the new device used another code (or someone interfered); nothing was enrolled",
            ));
        }
        open_json(&self.keys.joiner_seal, &confirm.sealed, "confirm")
    }

    /// Message 4.
    pub(crate) fn welcome(&self, body: &WelcomeBody) -> Result<Vec<u8>> {
        Ok(to_json(&Welcome {
            sealed: seal_json(&self.keys.seal, body)?,
        }))
    }
}

/// Feeds `data` to every parser of a pairing message, as the relay-side
/// attacker would: as the hello, the reply, the confirm and the welcome.
/// Nothing may panic, and nothing but the genuine messages may pass.
pub fn fuzz_messages(data: &[u8]) {
    let Ok(code) = PairingCode::parse("AAAA-BBBB-CCCC-DDDD") else {
        return;
    };
    let Ok(device) = DeviceKeys::generate() else {
        return;
    };
    let _ = Approver::on_hello(&code, data);
    let (joiner, _) = Joiner::start(code.clone(), &device, "fuzz");
    assert!(joiner.on_reply(data).is_err(), "a forged reply passed");
    let (joiner, hello) = Joiner::start(code.clone(), &device, "fuzz");
    let Ok((approver, reply)) = Approver::on_hello(&code, &hello) else {
        return;
    };
    assert!(
        approver.on_confirm(data).is_err(),
        "a forged confirm passed"
    );
    let Ok((_, key)) = joiner.on_reply(&reply) else {
        return;
    };
    assert!(key.open(data).is_err(), "a forged welcome opened");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body() -> WelcomeBody {
        WelcomeBody {
            root: SigningKey::from_seed(&[1; 32]).verifying_key(),
            head: BlobId::of(b"head"),
            relays: Vec::new(),
            log: vec!["AAAA".into()],
            per_relay_from: Some(1),
        }
    }

    #[test]
    fn codes_parse_forgivingly() {
        let code = PairingCode::generate().unwrap();
        let text = code.to_string();
        assert_eq!(text.len(), 19);
        assert!(PairingCode::parse(&text.to_lowercase()).unwrap() == code);
        assert!(PairingCode::parse("k7qf 9xm2 pt4r h3jd").is_ok());
        assert!(
            PairingCode::parse("O1IL-0000-0000-0000").unwrap()
                == PairingCode::parse("0111-0000-0000-0000").unwrap()
        );
        assert!(PairingCode::parse("K7QF-9XM2-PT4R-H3J").is_err());
        assert!(PairingCode::parse("K7QF-9XM2-PT4R-H3JU").is_err());
        assert!(PairingCode::parse("K7QF-9XM2-PT4R-H3JDD").is_err());
        // A code of the previous release is refused with what to do.
        let old = PairingCode::parse("K7QF-9XM2-PT4R").unwrap_err();
        assert!(old.to_string().contains("older cairn"), "{old}");
    }

    #[test]
    fn same_code_pairs() {
        let code = PairingCode::generate().unwrap();
        let device = DeviceKeys::generate().unwrap();
        let (joiner, hello) = Joiner::start(code.clone(), &device, "phone");
        let (approver, reply) = Approver::on_hello(&code, &hello).unwrap();
        let (confirm, key) = joiner.on_reply(&reply).unwrap();
        let seen = approver.on_confirm(&confirm).unwrap();
        assert_eq!(seen.device, device.signing.verifying_key());
        assert_eq!(seen.name, "phone");
        let welcome = approver.welcome(&body()).unwrap();
        assert_eq!(key.open(&welcome).unwrap().head, body().head);
    }

    #[test]
    fn another_code_fails_on_both_sides() {
        let code = PairingCode::parse("AAAA-BBBB-CCCC-DDDD").unwrap();
        let wrong = PairingCode::parse("AAAA-BBBB-CCCC-DDDE").unwrap();
        assert_eq!(
            code.mailbox().verifying_key(),
            wrong.mailbox().verifying_key()
        );
        let device = DeviceKeys::generate().unwrap();
        let (joiner, hello) = Joiner::start(code, &device, "phone");
        let (_, reply) = Approver::on_hello(&wrong, &hello).unwrap();
        assert!(joiner.on_reply(&reply).is_err());
    }

    /// What a relay stores of a pairing names neither the device nor its
    /// keys, and a relay that alters the sealed keys is caught.
    #[test]
    fn the_relay_sees_no_device_keys_or_names() {
        let code = PairingCode::generate().unwrap();
        let device = DeviceKeys::generate().unwrap();
        let key = device.signing.verifying_key();
        let (joiner, hello) = Joiner::start(code.clone(), &device, "grandma's tablet");
        let (approver, reply) = Approver::on_hello(&code, &hello).unwrap();
        let (confirm, _) = joiner.on_reply(&reply).unwrap();
        let welcome = approver.welcome(&body()).unwrap();
        for message in [&hello, &reply, &confirm, &welcome] {
            let text = String::from_utf8_lossy(message);
            assert!(!text.contains("grandma"), "{text}");
            assert!(!text.contains(&key.to_string()), "{text}");
            assert!(
                !text.contains(&cairn_proto::encode_base64url(&key.to_bytes())),
                "{text}"
            );
            let raw = key.to_bytes();
            assert!(!message.windows(32).any(|w| w == raw));
        }
        // A relay swapping in keys of its own cannot reseal them.
        let mut forged: Confirm = serde_json::from_slice(&confirm).unwrap();
        let mut sealed = unb64(&forged.sealed).unwrap();
        sealed[0] ^= 1;
        forged.sealed = b64(&sealed);
        let forged = serde_json::to_vec(&forged).unwrap();
        assert!(approver.on_confirm(&forged).is_err());
        assert_eq!(approver.on_confirm(&confirm).unwrap().device, key);
    }

    /// A hello answered under another transcript (a relay that replaced
    /// the joiner's SPAKE2 message) fails on both sides.
    #[test]
    fn a_replaced_hello_is_caught() {
        let code = PairingCode::generate().unwrap();
        let device = DeviceKeys::generate().unwrap();
        let (joiner, _) = Joiner::start(code.clone(), &device, "phone");
        let (_, other_hello) = Joiner::start(code.clone(), &device, "phone");
        let (approver, reply) = Approver::on_hello(&code, &other_hello).unwrap();
        assert!(joiner.on_reply(&reply).is_err());
        let (joiner2, hello2) = Joiner::start(code.clone(), &device, "phone");
        let (approver2, reply2) = Approver::on_hello(&code, &hello2).unwrap();
        let (confirm2, _) = joiner2.on_reply(&reply2).unwrap();
        assert!(approver.on_confirm(&confirm2).is_err());
        assert!(approver2.on_confirm(&confirm2).is_ok());
    }

    #[test]
    fn fuzz_entry_refuses_junk() {
        for junk in [
            &b""[..],
            b"{}",
            b"{\"sealed\":\"AAAA\"}",
            b"{\"confirm\":\"AAAA\"}",
        ] {
            fuzz_messages(junk);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_code_text_round_trips(bytes in proptest::collection::vec(0u8..32, CODE_LEN)) {
            let text: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b)])).collect();
            let code = PairingCode::parse(&text).unwrap();
            proptest::prop_assert!(PairingCode::parse(&code.to_string()).unwrap() == code);
        }

        #[test]
        fn arbitrary_messages_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let code = PairingCode::parse("AAAA-BBBB-CCCC-DDDD").unwrap();
            let _ = Approver::on_hello(&code, &data);
        }
    }

    #[test]
    fn an_abort_ends_the_approvers_wait_with_a_clear_error() {
        let code = PairingCode::generate().unwrap();
        let device = DeviceKeys::generate().unwrap();
        let (_, hello) = Joiner::start(code.clone(), &device, "phone");
        let (approver, _) = Approver::on_hello(&code, &hello).unwrap();
        let err = approver.on_confirm(&abort_message()).unwrap_err();
        assert!(err.to_string().contains("codes differ"), "{err}");
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let code = PairingCode::generate().unwrap();
        for junk in [&b""[..], b"{}", b"null", b"{\"spake\":\"!!\"}"] {
            assert!(Approver::on_hello(&code, junk).is_err());
        }
    }
}
