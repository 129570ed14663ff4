//! Exit stays easy: the standard `age` tool opens what cairn stored, and
//! the recovery phrase alone brings everything back.

use std::process::Command;

use crate::common::{Device, Relay, data_with_marker};

/// Whether every one of `tools` runs; if not, `test` says it skips and why.
/// CI installs them (.ci/run), so there a missing one is a failure.
fn tools_present(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI must provide `{tool}`");
            eprintln!("SKIP {test}: no `{tool}` on PATH (apt-get install {tool})");
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_age_decrypts_a_stored_blob() {
    if !tools_present("debian_age_decrypts_a_stored_blob", &["age"]) {
        return;
    }
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let data = data_with_marker(70_000, b"hello age");
    let src = device.dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let put = device
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let id = put["blob"].as_str().unwrap();

    let keyfile = device.dir.path().join("vault.key");
    device
        .run(&["key", "export-vault", keyfile.to_str().unwrap()])
        .await
        .ok();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The sealed blob exactly as the relay stores it.
    let blob = a
        .blob_file(id)
        .expect("a 70 kB blob is a file on the relay");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keyfile)
        .arg(&blob)
        .output()
        .unwrap();
    assert!(out.status.success(), "age -d failed: {out:?}");
    let plain = out.stdout;
    assert_eq!(
        &plain[..data.len()],
        &data[..],
        "age's output starts with the file"
    );
    // Then zero padding, then the length as 8 big-endian bytes.
    let trailer: [u8; 8] = plain[plain.len() - 8..].try_into().unwrap();
    assert_eq!(u64::from_be_bytes(trailer), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_phrase_restores_identity_and_data() {
    let a = Relay::start().await;
    let b = Relay::start().await;
    let first = Device::new();
    let created = first.init("laptop").await;
    let phrase = created["recovery_phrase"].as_str().unwrap().to_owned();
    first.add_relays(&[&a, &b]).await;
    let data = data_with_marker(30_000, b"recover me");
    let src = first.dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    first
        .run(&["put", src.to_str().unwrap(), "--name", "precious"])
        .await
        .ok();

    // A wrong phrase is refused and creates nothing.
    let second = Device::new();
    let mut words: Vec<&str> = phrase.split(' ').collect();
    words.pop();
    let run = second
        .run_with(
            &["init", "--recover", "--relay", &b.url()],
            &[("CAIRN_RECOVERY_PHRASE", &words.join(" "))],
        )
        .await;
    assert!(
        run.err().contains("recovery phrase is not valid"),
        "{run:?}"
    );
    assert!(!second.home().exists());

    let recovered = second
        .run_with(
            &[
                "init",
                "--recover",
                "--relay",
                &b.url(),
                "--name",
                "new laptop",
                "--json",
            ],
            &[("CAIRN_RECOVERY_PHRASE", &phrase)],
        )
        .await
        .json();
    assert_eq!(recovered["root"], created["root"]);
    assert_eq!(recovered["devices"], 2);
    let out = second.dir.path().join("out");
    second
        .run(&["get", "precious", "-o", out.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // The first device sees the new one through the relays.
    let devices = first.run(&["device", "list", "--json"]).await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
}

/// The README's "Leaving without cairn" function, as written there.
fn readme_rebuild_function() -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let section = &readme[readme.find("### Leaving without cairn").unwrap()..];
    let block = &section[section.find("```bash\n").unwrap() + "```bash\n".len()..];
    block[..block.find("```").unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_rebuilds_a_chunked_file_with_age_and_curl() {
    if !tools_present(
        "the_readme_rebuilds_a_chunked_file_with_age_and_curl",
        &["age", "curl", "od"],
    ) {
        return;
    }
    let a = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&a]).await;
    let data = data_with_marker(9 << 20, b"leave with age");
    let src = device.dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let put = device
        .run(&["put", src.to_str().unwrap(), "--name", "big", "--json"])
        .await
        .json();
    assert!(put["chunks"].as_u64().unwrap() >= 2, "{put}");
    let listed = device.run(&["ls", "--json"]).await.json();
    let manifest = listed[0]["blob"].as_str().unwrap().to_owned();
    let keyfile = device.dir.path().join("vault.key");
    device
        .run(&["key", "export-vault", keyfile.to_str().unwrap()])
        .await
        .ok();

    let out = device.dir.path().join("rebuilt");
    let script = format!(
        "{}\nrebuild '{}' '{}' {manifest} > '{}'\n",
        readme_rebuild_function(),
        keyfile.display(),
        a.url(),
        out.display()
    );
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the rebuilt file differs"
    );

    // A relay that does not hold the manifest makes it fail, not write a
    // partial file silently.
    let b = Relay::start().await;
    let script = format!(
        "{}\nrebuild '{}' '{}' {manifest} > /dev/null\n",
        readme_rebuild_function(),
        keyfile.display(),
        b.url(),
    );
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(!run.status.success(), "{run:?}");
}
