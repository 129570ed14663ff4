//! The status page in a real browser: Debian's headless Chromium loads it
//! and runs its script, and the figures it shows match the signed info
//! document, before and after an upload. Screenshots at phone and desktop
//! sizes are kept in `target/artifacts/` for people to look at.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `CAIRN_CHROMIUM`); `.ci/run`
//! installs it, and without it the test says why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_proto::BlobId;
use cairn_testkit::key;

use crate::common::{TestRelay, bytes, info_document};

#[allow(clippy::print_stderr, reason = "a skipped test says why")]
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CAIRN_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    // CI installs it (.ci/run), so there a missing browser is a failure.
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide Chromium at {}",
        path.display()
    );
    eprintln!(
        "SKIP status page browser test: no Chromium at {} (apt-get install chromium, or set \
         CAIRN_CHROMIUM)",
        path.display()
    );
    None
}

/// Runs headless Chromium on `url` with `args`, giving the page's script
/// `budget_ms` of virtual time (its timers run that far) before Chromium
/// acts; returns standard output.
async fn chromium_run(browser: &Path, url: &str, budget_ms: u32, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(profile);
    String::from_utf8(out.stdout).unwrap()
}

/// The page as the browser has it after `budget_ms` of its script running.
async fn rendered(browser: &Path, url: &str, budget_ms: u32) -> String {
    chromium_run(browser, url, budget_ms, &["--dump-dom".to_owned()]).await
}

/// The text of the element with `id` in serialized `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[start..];
    let body = &rest[rest.find('>').unwrap() + 1..];
    &body[..body.find('<').unwrap()]
}

/// The value of attribute `attr` of the element with `id`.
fn attribute<'a>(dom: &'a str, id: &str, attr: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let tag = &dom[start..start + dom[start..].find('>').unwrap()];
    tag.split(&format!("{attr}=\""))
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no {attr} on #{id}: {tag}"))
}

/// The number in attribute `attr` of the element with `id`.
fn number_in(dom: &str, id: &str, attr: &str) -> u64 {
    attribute(dom, id, attr).parse().unwrap()
}

/// The figures the page shows agree with the signed info document.
async fn assert_matches_info(relay: &TestRelay, dom: &str) {
    let (info, _) = info_document(&relay.http, &relay.url("")).await;
    assert_eq!(text_of(dom, "key"), relay.key().to_string());
    assert_eq!(number_in(dom, "used", "data-bytes"), info.capacity_used);
    assert_eq!(number_in(dom, "total", "data-bytes"), info.capacity_total);
    assert_eq!(number_in(dom, "free", "data-bytes"), info.capacity_free);
    assert_eq!(
        number_in(dom, "retention", "data-secs"),
        info.retention_secs
    );
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_browser_shows_the_signed_figures_and_keeps_them_current() {
    let Some(browser) = chromium() else { return };
    let relay = TestRelay::start().await;
    let page = relay.url("/");

    // Fresh: nothing stored. Six seconds of script: one refresh of itself.
    let dom = rendered(&browser, &page, 6_000).await;
    assert_matches_info(&relay, &dom).await;
    assert_eq!(text_of(&dom, "blobs"), "0");
    assert_eq!(text_of(&dom, "gc-last"), "none yet since start");
    assert!(
        text_of(&dom, "refreshed").starts_with("updated"),
        "the page did not refresh itself: {}",
        text_of(&dom, "refreshed")
    );
    let rate: f64 = text_of(&dom, "request-rate").parse().unwrap_or_else(|_| {
        panic!(
            "no request rate after a refresh: {:?}",
            text_of(&dom, "request-rate")
        )
    });
    assert!(rate >= 0.0);

    // After an upload the figures move, and still match.
    let uploader = key("status page uploader");
    let data = bytes("status page", 300_000);
    assert!(relay.put(&uploader, &data).await.status().is_success());
    relay.handle.run_gc().await.unwrap();
    let dom = rendered(&browser, &page, 6_000).await;
    let last = text_of(&dom, "gc-last");
    assert!(
        last.contains(" ago, 0 blobs deleted"),
        "last expiry pass: {last:?}"
    );
    assert_matches_info(&relay, &dom).await;
    assert_eq!(text_of(&dom, "blobs"), "1");
    assert_eq!(number_in(&dom, "used", "data-bytes"), 300_000);
    // The chart of the last hour has the minute in progress, with the
    // upload's requests and bytes in it.
    assert!(number_in(&dom, "traffic-chart", "data-intervals") >= 1);
    let peak: f64 = attribute(&dom, "traffic-chart", "data-peak-requests")
        .parse()
        .unwrap();
    assert!(peak > 0.0, "no requests charted: {peak}");
    assert!(number_in(&dom, "traffic-chart", "data-peak-bytes") > 0);
    assert!(dom.contains("<rect class=\"req\""), "no request bars");
    assert!(
        dom.contains("<rect class=\"in\""),
        "no bars of bytes received"
    );
    // Nothing on it names a user's key or a blob.
    assert!(!dom.contains(&uploader.verifying_key().to_string()));
    assert!(!dom.contains(&BlobId::of(&data).to_string()));

    // Screenshots, for people: a phone and a desktop.
    for (name, size) in [("phone", "412,915"), ("desktop", "1280,1000")] {
        let path = artifacts().join(format!("status-page-{name}.png"));
        let _ = std::fs::remove_file(&path);
        chromium_run(
            &browser,
            &page,
            // After a refresh, so the rates are filled in.
            6_000,
            &[
                format!("--window-size={size}"),
                format!("--screenshot={}", path.display()),
            ],
        )
        .await;
        let png = std::fs::read(&path).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name} screenshot is not a picture of the page ({} bytes)",
            png.len()
        );
        eprintln!("status page screenshot: {}", path.display());
    }
}
