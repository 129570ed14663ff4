//! Drives a real relay, started once in this process on a loopback port,
//! with arbitrary requests: method, route, path tail, query, headers and
//! body from the input, sent as raw HTTP/1.1 (so malformed requests reach
//! the server's own parser). Half the time the request carries a valid
//! upload token, so the handlers behind authentication are reached too.
//!
//! The relay must answer every request, or close a connection it cannot
//! parse, and never with an internal error: a 500 (or a panic, which
//! libFuzzer turns into a crash) is a bug. 503 (draining, busy) and 507
//! (full) are refusals, not errors.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use cairn_proto::{BlobId, Method, RequestPath, TokenTarget, VerifyingKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};

#[derive(Arbitrary, Debug)]
struct Request {
    method: u8,
    route: u8,
    tail: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Declare the body's length (or a wrong one), or send it chunked.
    length: Length,
    /// Sign an upload token for the blob the path names.
    token: Option<TokenMethod>,
}

#[derive(Arbitrary, Debug)]
enum Length {
    Exact,
    Declared(u16),
    Chunked,
    None,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TokenMethod {
    Put,
    Delete,
    Reconcile,
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "FOO",
];

struct Relay {
    addr: SocketAddr,
    key: VerifyingKey,
}

/// The relay, started on first use and kept for the whole run.
fn relay() -> &'static Relay {
    static RELAY: OnceLock<Relay> = OnceLock::new();
    RELAY.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!("cairn-fuzz-relay-{}", std::process::id()));
        let mut config = cairn_relay::RelayConfig::new(dir);
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.limits = cairn_proto::FairShareLimits::default();
        config.header_timeout = Duration::from_secs(2);
        config.body_idle_timeout = Duration::from_secs(2);
        let handle = runtime
            .block_on(cairn_relay::start(config))
            .expect("the relay starts");
        let relay = Relay {
            addr: handle.addr(),
            key: handle.key(),
        };
        // The runtime and the relay live as long as the process.
        std::mem::forget(handle);
        std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
        relay
    })
}

/// A path for `route` whose parameters are real-looking ids and keys,
/// followed by the fuzzed tail.
fn path(route: u8, id: &BlobId, mailbox: &VerifyingKey, tail: &str) -> String {
    let base = match route % 10 {
        0 => format!("/v1/blobs/{id}"),
        1 => format!("/v1/blobs/{id}/proof"),
        2 => format!("/v1/heads/{mailbox}"),
        3 => format!("/v1/heads/{mailbox}/s"),
        4 => "/v1/federation/reconcile".to_owned(),
        5 => "/.well-known/cairn-relay".to_owned(),
        6 => "/metrics".to_owned(),
        7 => "/health".to_owned(),
        8 => "/".to_owned(),
        _ => String::new(),
    };
    format!("{base}{tail}")
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// One request built from `data` (read the way libFuzzer reads a typed
/// input, so corpus files mean the same here and there).
pub fn relay_http(data: &[u8]) {
    let Ok(request) = Request::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let relay = relay();
    let id = BlobId::of(&request.body);
    let mailbox = cairn_testkit::key("fuzz mailbox").verifying_key();
    let mut path = path(request.route, &id, &mailbox, &clean(&request.tail));
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if let Some(query) = &request.query {
        path = format!("{path}?{}", clean(query));
    }
    let method = METHODS[usize::from(request.method) % METHODS.len()];

    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    for (name, value) in request.headers.iter().take(16) {
        head.push_str(&format!("{}: {}\r\n", clean(name), clean(value)));
    }
    if let Some(kind) = request.token {
        let (method, target) = match kind {
            TokenMethod::Put => (Method::Put, TokenTarget::Blob(id)),
            TokenMethod::Delete => (Method::Delete, TokenTarget::Blob(id)),
            TokenMethod::Reconcile => (
                Method::Post,
                TokenTarget::Path(
                    RequestPath::new("/v1/federation/reconcile").expect("a request path"),
                ),
            ),
        };
        let token =
            cairn_testkit::token(&relay.key, method, target, cairn_testkit::unix_now() + 300);
        let auth = cairn_testkit::auth_header(&token, &cairn_testkit::key("fuzz uploader"));
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    let mut bytes = Vec::new();
    match request.length {
        Length::Exact => head.push_str(&format!("Content-Length: {}\r\n", request.body.len())),
        Length::Declared(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        Length::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Length::None => {}
    }
    head.push_str("\r\n");
    bytes.extend_from_slice(head.as_bytes());
    match request.length {
        Length::Chunked => {
            bytes.extend_from_slice(format!("{:x}\r\n", request.body.len()).as_bytes());
            bytes.extend_from_slice(&request.body);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        _ => bytes.extend_from_slice(&request.body),
    }

    let Ok(mut stream) = TcpStream::connect(relay.addr) else {
        panic!("the relay stopped accepting connections");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // The relay may answer and close before reading everything.
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    if let Some(status) = answer
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
    {
        assert!(
            !status.starts_with('5') || status == "503" || status == "507",
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}
