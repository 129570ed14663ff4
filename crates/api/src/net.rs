//! How a request that never got an answer failed, in words a person can
//! act on: named from the typed errors under reqwest's (its timeout flag,
//! the OS's `io::Error` kinds, rustls's errors), never from their text
//! alone. Clients and relays say the same thing about an unreachable relay.

use std::error::Error as _;
use std::fmt;
use std::io;

/// How a request failed to reach a relay, in the words a person can act
/// on. The HTTP library's own account ([`crate::describe`]) is for logs
/// and `--verbose`, not for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetFailure {
    /// Nothing listens at the relay's address: it is down, or the port is
    /// wrong.
    ConnectionRefused,
    /// No answer in time, connecting or between bytes.
    TimedOut,
    /// The relay's host name did not resolve.
    DnsFailed,
    /// The TLS handshake failed (a certificate not trusted, or not TLS at
    /// all on the other end).
    TlsFailed,
    /// The relay, or something on the way, reset the connection.
    ConnectionReset,
    /// No route to the relay's network or host.
    NoRoute,
    /// The connection broke off before the answer was whole.
    ConnectionLost,
    /// Another failure to connect or to send the request.
    Other,
}

impl fmt::Display for NetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConnectionRefused => "connection refused",
            Self::TimedOut => "timed out",
            Self::DnsFailed => "DNS lookup failed",
            Self::TlsFailed => "TLS handshake failed",
            Self::ConnectionReset => "connection reset",
            Self::NoRoute => "no route to it",
            Self::ConnectionLost => "connection lost mid-answer",
            Self::Other => "connection failed",
        })
    }
}

/// Names how `err` failed, from the typed errors under it: reqwest's own
/// timeout, the OS's `io::Error` kinds, rustls's errors.
pub fn net_failure(err: &reqwest::Error) -> NetFailure {
    if err.is_timeout() {
        return NetFailure::TimedOut;
    }
    let mut cause = err.source();
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<io::Error>().and_then(io_failure) {
            return found;
        }
        // The resolver's failure is an `io::Error` of a kind std does not
        // name (`Uncategorized`); hyper-util's connector marks that step
        // with this message, and has no public type to test instead. The
        // unit test against a `.invalid` name keeps this honest.
        if error.to_string() == "dns error" {
            return NetFailure::DnsFailed;
        }
        cause = error.source();
    }
    if err.is_body() || err.is_decode() {
        NetFailure::ConnectionLost
    } else {
        NetFailure::Other
    }
}

/// What an I/O error under a request says, if it says something a person
/// can act on.
fn io_failure(err: &io::Error) -> Option<NetFailure> {
    // TLS connectors wrap rustls's error in an `io::Error`, sometimes two,
    // and `io::Error::source` skips past the wrapped error: look inside.
    let mut inner = err.get_ref();
    while let Some(error) = inner {
        if error.is::<tokio_rustls::rustls::Error>() {
            return Some(NetFailure::TlsFailed);
        }
        inner = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref);
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Some(NetFailure::ConnectionRefused),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Some(NetFailure::ConnectionReset),
        io::ErrorKind::TimedOut => Some(NetFailure::TimedOut),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            Some(NetFailure::NoRoute)
        }
        io::ErrorKind::UnexpectedEof => Some(NetFailure::ConnectionLost),
        _ => None,
    }
}
