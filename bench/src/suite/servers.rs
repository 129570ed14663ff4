//! The servers a suite run measures: a cairn relay (embedded store,
//! fair-share limits off) and nginx (sendfile, WebDAV PUT), both on
//! loopback, both stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cairn_testkit::RelayProcess;

/// Limits off: the suite measures storage and serving, not policy.
pub(crate) const UNLIMITED: &[&str] = &[
    "--capacity",
    "200G",
    "--max-blob-size",
    "2G",
    "--key-quota",
    "0",
    "--key-rate",
    "0",
    "--addr-rate",
    "0",
    "--max-uploads",
    "1024",
    "--replicas",
    "0",
];

/// The release binary `name`, next to this one.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the release binaries first (bench/run does)",
            path.display()
        );
    }
    Ok(path)
}

/// A relay process with its own data directory.
pub(crate) fn relay(work: &Path, name: &str) -> anyhow::Result<RelayProcess> {
    Ok(RelayProcess::spawn(
        &sibling("cairn-relay")?,
        &work.join(name),
        UNLIMITED,
    ))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (ECDSA P-256),
/// made with the openssl tool, that the relay and nginx both serve.
#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Tls {
    pub(crate) fn make(work: &Path) -> anyhow::Result<Self> {
        let (cert, key) = cairn_testkit::self_signed_cert(work)
            .context("openssl could not make a certificate (apt-get install -y openssl)")?;
        Ok(Self { cert, key })
    }
}

/// A relay process serving HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with `tls`,
/// and its `https://` URL.
pub(crate) fn relay_tls(
    work: &Path,
    name: &str,
    tls: &Tls,
) -> anyhow::Result<(RelayProcess, String)> {
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let mut args = UNLIMITED.to_vec();
    args.extend(["--tls-cert", &cert, "--tls-key", &key]);
    let relay = RelayProcess::spawn(&sibling("cairn-relay")?, &work.join(name), &args);
    let url = relay.url().replacen("http://", "https://", 1);
    Ok((relay, url))
}

/// An nginx serving `WORK/www` on a free loopback port, with WebDAV PUT
/// under `/dav/`.
#[derive(Debug)]
pub(crate) struct Nginx {
    work: PathBuf,
    pub(crate) url: String,
}

impl Nginx {
    pub(crate) fn start(work: &Path) -> anyhow::Result<Self> {
        Self::start_with(work, None)
    }

    /// With `tls`: HTTPS only, HTTP/2 by ALPN, TLS 1.3 with the suite
    /// rustls prefers (AES-256-GCM) and X25519, as the relay negotiates.
    pub(crate) fn start_with(work: &Path, tls: Option<&Tls>) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let www = work.join("www");
        std::fs::create_dir_all(www.join("dav"))?;
        std::fs::create_dir_all(work.join("nginx-tmp"))?;
        let w = work.display();
        let (listen_tls, tls_lines) = match tls {
            Some(tls) => (
                " ssl http2",
                format!(
                    "ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.3; \
                     ssl_ecdh_curve X25519; ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384; \
                     ssl_session_cache shared:cairn:10m;",
                    tls.cert.display(),
                    tls.key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let config = format!(
            "worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000;
  client_body_temp_path {w}/nginx-tmp/body;
  proxy_temp_path {w}/nginx-tmp/proxy;
  fastcgi_temp_path {w}/nginx-tmp/fastcgi;
  uwsgi_temp_path {w}/nginx-tmp/uwsgi;
  scgi_temp_path {w}/nginx-tmp/scgi;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port}{listen_tls};
    {tls_lines}
    root {w}/www;
    location /dav/ {{
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      client_body_buffer_size 128k;
    }}
  }}
}}
"
        );
        // Running as root, nginx's workers would drop to `nobody`, who
        // cannot write the temp directory: keep them as the current user.
        let config = if is_root() {
            format!("user root;\n{config}")
        } else {
            config
        };
        let path = work.join("nginx.conf");
        std::fs::write(&path, config)?;
        let status = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(work)
            .status()
            .context("starting nginx (apt-get install -y nginx-full)")?;
        if !status.success() {
            bail!(
                "nginx did not start: {}",
                std::fs::read_to_string(work.join("nginx-error.log")).unwrap_or_default()
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        wait_for_port(port)?;
        Ok(Self {
            work: work.to_path_buf(),
            url,
        })
    }

    /// Where a file must be for nginx to serve it at `/name`.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.work.join("www").join(name)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.work.join("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
