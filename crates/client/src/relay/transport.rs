//! Which relay URLs the client may talk to: https anywhere, plain http
//! only to this machine unless the user accepts it (`--insecure`).
//!
//! Over plain http to another machine, upload and delete tokens, pairing
//! messages, heads and the identity log cross the network readable and
//! alterable, and the key pinned when a relay is added comes over a channel
//! that authenticates nothing. Loopback never leaves the machine, so it is
//! allowed for local relays, tests and the demo.

use std::net::IpAddr;

use crate::error::{Error, Result};

/// Whether plain `http://` may reach relays off this machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// https to any host; plain http only to loopback (127.0.0.0/8, ::1,
    /// `localhost`). The default.
    #[default]
    Secure,
    /// Plain http to any host too: the user passed `--insecure`.
    Insecure,
}

impl Transport {
    /// Whether a relay at `url` may be reached under this setting. A URL
    /// that does not parse is not allowed.
    pub fn allows(self, url: &str) -> bool {
        match reqwest::Url::parse(url) {
            Ok(parsed) => match parsed.scheme() {
                "https" => true,
                "http" => self == Self::Insecure || is_loopback(&parsed),
                _ => false,
            },
            Err(_) => false,
        }
    }
}

/// Whether `url`'s host is this machine: an address in 127.0.0.0/8, ::1,
/// or the name `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Refuses a relay URL that `transport` does not allow, before any request
/// is sent to it, with what reaching it would give up.
pub fn check_transport(url: &str, transport: Transport) -> Result<()> {
    if transport.allows(url) {
        return Ok(());
    }
    Err(Error::InsecureRelay {
        url: url.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_allowed_to_loopback_only_unless_insecure() {
        for url in [
            "https://relay.example",
            "https://203.0.113.7:7070",
            "http://127.0.0.1:7070",
            "http://127.8.9.10",
            "http://[::1]:7070",
            "http://localhost:7070",
            "http://LOCALHOST",
        ] {
            assert!(Transport::Secure.allows(url), "{url}");
        }
        for url in [
            "http://relay.invalid",
            "http://192.168.1.10:7070",
            "http://[::ffff:127.0.0.1]",
            "http://localhost.example",
            "http://0.0.0.0:7070",
            "not a url",
        ] {
            assert!(!Transport::Secure.allows(url), "{url}");
        }
        assert!(Transport::Insecure.allows("http://relay.invalid"));
        assert!(!Transport::Insecure.allows("ftp://relay.invalid"));
    }

    #[test]
    fn the_refusal_names_the_flag_and_what_it_gives_up() {
        let err = check_transport("http://relay.invalid", Transport::Secure)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for needle in ["http://relay.invalid", "--insecure", "tokens", "pinned"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(check_transport("http://relay.invalid", Transport::Insecure).is_ok());
    }
}
