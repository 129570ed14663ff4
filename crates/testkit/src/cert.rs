//! A self-signed certificate for servers on loopback, made with the
//! openssl tool (tests and benchmarks do without a certificate crate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1,
/// valid two days, written as `cert.pem` and `key.pem` under `dir`; `None`
/// when the openssl tool is missing or fails.
pub fn self_signed_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}
