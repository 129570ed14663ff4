//! Small validated field types shared by several records.
//!
//! Each text field has a byte bound and an alphabet. Validation runs both
//! when a value is built and when it is decoded, so a record that holds one
//! of these types holds a valid one.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `secs` seconds later, saturating at the far future.
    pub const fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self(r.u64()?))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Defines a string newtype whose every value satisfies `$check`.
macro_rules! validated_text {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal, max = $max:expr, check = $check:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The most bytes a value may have.
            pub const MAX_LEN: usize = $max;

            /// Validates `text`.
            ///
            /// # Errors
            ///
            /// [`DecodeError::Invalid`] or [`DecodeError::TooLong`] naming
            /// the rule `text` breaks.
            pub fn new(text: impl Into<String>) -> Result<Self, DecodeError> {
                let text = text.into();
                if text.len() > Self::MAX_LEN {
                    return Err(DecodeError::TooLong {
                        field: $field,
                        len: text.len(),
                        max: Self::MAX_LEN,
                    });
                }
                if text.is_empty() {
                    return Err(DecodeError::Invalid { field: $field, reason: "empty" });
                }
                let check: fn(&str) -> Result<(), &'static str> = $check;
                check(&text).map_err(|reason| DecodeError::Invalid { field: $field, reason })?;
                Ok(Self(text))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn encode(&self, w: &mut Writer) {
                w.bytes16(self.0.as_bytes());
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Self::new(r.str16($field, Self::MAX_LEN)?)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = DecodeError;

            fn from_str(s: &str) -> Result<Self, DecodeError> {
                Self::new(s)
            }
        }
    };
}

validated_text! {
    /// A device's human-readable name ("laptop", "Anna's phone"): 1 to 64
    /// bytes of UTF-8 without control characters or surrounding whitespace.
    DeviceName, field = "device name", max = 64, check = |s| {
        if s.chars().any(char::is_control) {
            Err("contains a control character")
        } else if s.trim() != s {
            Err("has leading or trailing whitespace")
        } else {
            Ok(())
        }
    }
}

validated_text! {
    /// The name of a slot in a mailbox (one per writer, usually a device):
    /// 1 to 64 characters from `A-Z a-z 0-9 _ -`, so it is safe in a URL path.
    Slot, field = "slot", max = 64, check = |s| {
        if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            Ok(())
        } else {
            Err("characters outside A-Z a-z 0-9 _ -")
        }
    }
}

validated_text! {
    /// The base URL of a relay: `http://` or `https://` followed by printable
    /// ASCII without spaces, at most 256 bytes.
    RelayUrl, field = "relay url", max = 256, check = |s| {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or("scheme is not http:// or https://")?;
        if rest.is_empty() {
            Err("no host")
        } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
            Err("characters outside printable ASCII")
        } else {
            Ok(())
        }
    }
}

validated_text! {
    /// A software name and version ("cairn-relay 0.1.0"): printable ASCII,
    /// at most 64 bytes.
    SoftwareVersion, field = "software version", max = 64, check = |s| {
        if s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            Ok(())
        } else {
            Err("characters outside printable ASCII")
        }
    }
}

validated_text! {
    /// An HTTP request path that a token authorizes ("/v1/heads/..."):
    /// starts with `/`, printable ASCII without spaces, at most 512 bytes.
    RequestPath, field = "request path", max = 512, check = |s| {
        if !s.starts_with('/') {
            Err("does not start with /")
        } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
            Err("characters outside printable ASCII")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert!(DeviceName::new("Anna's phone 📱").is_ok());
        assert!(DeviceName::new("").is_err());
        assert!(DeviceName::new(" laptop").is_err());
        assert!(DeviceName::new("lap\ntop").is_err());
        assert!(DeviceName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn slots_are_url_safe() {
        assert!(Slot::new("device-01_a").is_ok());
        assert!(Slot::new("a/b").is_err());
        assert!(Slot::new("a b").is_err());
    }

    #[test]
    fn relay_urls_need_a_scheme_and_a_host() {
        assert!(RelayUrl::new("https://relay.example:7070").is_ok());
        assert!(RelayUrl::new("ftp://relay.example").is_err());
        assert!(RelayUrl::new("https://").is_err());
        assert!(RelayUrl::new("https://a b").is_err());
    }

    #[test]
    fn request_paths_are_absolute() {
        assert!(RequestPath::new("/v1/heads/x").is_ok());
        assert!(RequestPath::new("v1/heads").is_err());
    }
}
