//! Serde through a type's text form (`Display` / `FromStr`), so the client's
//! JSON files hold keys and ids in the same notation PROTOCOL.md uses.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize as _, Deserializer, Serializer};

pub(crate) fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: FromStr,
    T::Err: Display,
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// [`serialize`]/[`deserialize`] for Ed25519 public keys that repeat many
/// times in one document (the device and relay keys of every entry in a
/// file table). Parsing a key checks that it is a canonical curve point,
/// which costs a point decompression; a table of 10,000 entries names a
/// handful of keys 30,000 times, so parsed keys are remembered (per thread,
/// a bounded number).
pub(crate) mod repeated_key {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use cairn_proto::VerifyingKey;
    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Distinct keys remembered before the memory is cleared.
    const REMEMBERED: usize = 4096;

    thread_local! {
        static PARSED: RefCell<HashMap<String, VerifyingKey>> = RefCell::new(HashMap::new());
    }

    pub(crate) fn serialize<S: Serializer>(key: &VerifyingKey, s: S) -> Result<S::Ok, S::Error> {
        super::serialize(key, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VerifyingKey, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(key) = PARSED.with(|p| p.borrow().get(&text).copied()) {
            return Ok(key);
        }
        let key: VerifyingKey = text.parse().map_err(serde::de::Error::custom)?;
        PARSED.with(|p| {
            let mut parsed = p.borrow_mut();
            if parsed.len() >= REMEMBERED {
                parsed.clear();
            }
            parsed.insert(text, key);
        });
        Ok(key)
    }
}

/// [`serialize`]/[`deserialize`] for an optional value (with
/// `#[serde(default, skip_serializing_if = "Option::is_none")]`).
pub(crate) mod optional {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes a reference
    pub(crate) fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
