//! Opens untrusted bytes as a sealed blob (age + Padmé + length trailer):
//! no panic, and nothing opens without the right key. Then seals the same
//! bytes as data and checks they come back exactly.
#![no_main]

use cairn_client::keys::X25519Secret;
use cairn_client::seal::{open_bytes, seal_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = X25519Secret::from_bytes([7; 32]);
    let _ = open_bytes(data, std::slice::from_ref(&key));
    let (_, sealed) = seal_bytes(data, &key.public()).expect("sealing to memory");
    let opened = open_bytes(&sealed, std::slice::from_ref(&key)).expect("own seal opens");
    assert_eq!(opened, data, "round trip changed the data");
});
