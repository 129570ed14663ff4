//! HTTPS with a certificate from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

#[tokio::test]
async fn serves_https_and_refuses_plain_http_on_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = cairn_testkit::self_signed_cert(dir.path()) else {
        eprintln!("SKIP serves_https: the openssl tool is not installed (apt-get install openssl)");
        return;
    };
    let mut config = cairn_relay::RelayConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(cairn_relay::TlsFiles {
        cert: cert.clone(),
        key,
    });
    let relay = cairn_relay::start(config).await.unwrap();
    assert!(relay.url().starts_with("https://"));

    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(relay.addr()).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"ok\""));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = cairn_testkit::http()
        .get(format!("http://{}/health", relay.addr()))
        .send()
        .await;
    assert!(plain.is_err());
    relay.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let mut config = cairn_relay::RelayConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(cairn_relay::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    let err = cairn_relay::start(config).await.unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("cert.pem"), "{chain}");
}

/// Part of issue 1/7: plain HTTP on an address other machines can reach is
/// refused at start, with the way out named, unless the operator says a
/// TLS-terminating proxy is in front. Loopback stays allowed (every other
/// process test listens there).
#[tokio::test]
async fn plain_http_off_loopback_needs_behind_tls_proxy() {
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn-relay"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(&data)
        .env_remove("CAIRN_RELAY_BEHIND_TLS_PROXY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay started on 0.0.0.0 without TLS");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    for needle in [
        "0.0.0.0:0",
        "--behind-tls-proxy",
        "--tls-cert",
        "readable and alterable",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!data.exists(), "refused before anything was created");

    // Said so, it starts, and answers.
    let relay =
        cairn_testkit::RelayProcess::spawn_at(bin, &data, "0.0.0.0:0", &["--behind-tls-proxy"]);
    let url = relay.url().replace("0.0.0.0", "127.0.0.1");
    let health = cairn_testkit::http()
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success(), "{url}/health");
    assert!(relay.terminate().success());
}
