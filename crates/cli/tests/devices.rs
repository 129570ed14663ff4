//! Two devices of one identity: pairing, sharing, revoking.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, ChildStdout};

use cairn_client::{Client, Error, Home, Passphrase};

use crate::common::{Device, PASSPHRASE, Relay, Run, data_with_marker};

/// A `cairn device join` running on a device, with the code it showed.
struct Joining {
    child: Child,
    reader: BufReader<ChildStdout>,
    code: String,
}

impl Joining {
    async fn start(device: &Device, relay: &Relay, wait: &str) -> Self {
        Self::start_at(device, &relay.url(), wait).await
    }

    /// Joins through the relay at `url` (any URL that reaches it).
    async fn start_at(device: &Device, url: &str, wait: &str) -> Self {
        Self::start_named(device, url, "phone", wait).await
    }

    /// Joins through the relay at `url` as a device named `name`.
    async fn start_named(device: &Device, url: &str, name: &str, wait: &str) -> Self {
        let mut child = device.spawn(&[
            "device", "join", "--relay", url, "--name", name, "--json", "--wait", wait,
        ]);
        let stdout = child.stdout.take().unwrap();
        let (line, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            (line, reader)
        })
        .await
        .unwrap();
        let shown: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("join's first line is not JSON ({e}): {line:?}"));
        let code = shown["code"].as_str().unwrap().to_owned();
        Self {
            child,
            reader,
            code,
        }
    }

    /// Waits for the join to end; the rest of its output.
    async fn finish(mut self) -> Run {
        tokio::task::spawn_blocking(move || {
            let mut rest = String::new();
            self.reader.read_to_string(&mut rest).unwrap();
            let mut stderr = String::new();
            let mut pipe = self.child.stderr.take().unwrap();
            pipe.read_to_string(&mut stderr).unwrap();
            let status = self.child.wait().unwrap();
            Run {
                code: status.code().unwrap_or(-1),
                stdout: rest,
                stderr,
            }
        })
        .await
        .unwrap()
    }
}

/// A device that joined through another URL of a relay in the set (the
/// same relay, the same key) keeps one entry for it, and stores files
/// without being told that the relay "holds a newer head".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_through_another_url_of_the_same_relay_puts_without_false_warnings() {
    let relay = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&relay]).await;
    let phone = Device::new();
    let alias = relay.url().replace("127.0.0.1", "localhost");
    let joining = Joining::start_at(&phone, &alias, "30").await;
    laptop
        .run(&["device", "approve", &joining.code, "--json", "--wait", "30"])
        .await
        .json();
    joining.finish().await.json();
    let src = phone.dir.path().join("doc");
    std::fs::write(&src, data_with_marker(5_000, b"through an alias")).unwrap();
    let put = phone.run(&["put", src.to_str().unwrap(), "--json"]).await;
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert!(
        !put.stderr.contains("newer head") && !put.stdout.contains("newer head"),
        "{put:?}"
    );
    // One relay is one copy, whatever URLs reach it.
    let report: serde_json::Value = serde_json::from_str(&put.stdout).unwrap();
    assert_eq!(report["copies"].as_array().unwrap().len(), 1, "{report}");
}

/// Runs `device join` on `new` and `device approve` on `approver`
/// (with a wrong password, if asked); returns both results.
pub(crate) async fn pair(
    approver: &Device,
    new: &Device,
    relay: &Relay,
    wrong_password: bool,
    wait: &str,
) -> (Run, Run) {
    let joining = Joining::start(new, relay, wait).await;
    let mut code = joining.code.clone();
    if wrong_password {
        // Same rendezvous (first group), another password.
        let last = code.pop().unwrap();
        code.push(if last == 'A' { 'B' } else { 'A' });
    }
    let approve = approver
        .run(&["device", "approve", &code, "--json", "--wait", wait])
        .await;
    (approve, joining.finish().await)
}

/// Pairs `new`, named `name`, through the relay at `url`; returns both
/// results and the code the joining device showed.
pub(crate) async fn pair_named(
    approver: &Device,
    new: &Device,
    url: &str,
    name: &str,
) -> (Run, Run, String) {
    let joining = Joining::start_named(new, url, name, "30").await;
    let code = joining.code.clone();
    let approve = approver
        .run(&["device", "approve", &code, "--json", "--wait", "30"])
        .await;
    (approve, joining.finish().await, code)
}

/// Two relays, and a device named "laptop" storing two copies of each file.
async fn laptop_on_two_relays() -> (Relay, Relay, Device) {
    let (a, b) = (Relay::start().await, Relay::start().await);
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a, &b]).await;
    laptop.run(&["config", "--replicas", "2"]).await.ok();
    (a, b, laptop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_approve_share_then_revoke() {
    let (_a, b, laptop) = laptop_on_two_relays().await;
    let before = data_with_marker(25_000, b"stored before pairing");
    let src = laptop.dir.path().join("before");
    std::fs::write(&src, &before).unwrap();
    laptop.run(&["put", src.to_str().unwrap()]).await.ok();

    let phone = Device::new();
    let (approve, join) = pair(&laptop, &phone, &b, false, "30").await;
    let enrolled = approve.json();
    assert_eq!(enrolled["name"], "phone");
    let joined = join.json();
    assert_eq!(joined["device"], enrolled["device"]);
    assert_eq!(joined["relays"], 2, "the phone learned the whole relay set");

    // The phone reads what was stored before it existed, and stores too.
    let out = phone.dir.path().join("out");
    phone
        .run(&["get", "before", "-o", out.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), before);
    phone.run(&["config", "--replicas", "2"]).await.ok();
    let from_phone = data_with_marker(30_000, b"from the phone");
    let src = phone.dir.path().join("from-phone");
    std::fs::write(&src, &from_phone).unwrap();
    phone.run(&["put", src.to_str().unwrap()]).await.ok();
    let devices = laptop.run(&["device", "list", "--json"]).await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);

    // Revoke the phone from the laptop; new data goes to generation 2.
    let revoked = laptop
        .run(&["device", "revoke", "phone", "--json"])
        .await
        .json();
    assert_eq!(revoked["generation"], 2);
    let after = data_with_marker(20_000, b"stored after revocation");
    let src = laptop.dir.path().join("after");
    std::fs::write(&src, &after).unwrap();
    let put = laptop
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let after_id = put["blob"].as_str().unwrap().to_owned();
    // The laptop still reads everything, old generations included.
    for (name, data) in [
        ("before", &before),
        ("from-phone", &from_phone),
        ("after", &after),
    ] {
        assert_eq!(&laptop.get_data(name).await, data, "{name}");
    }

    // The phone can no longer read new data, even knowing the blob id...
    for what in ["after", after_id.as_str()] {
        let run = phone.run(&["get", what]).await;
        assert!(run.err().contains("revoked"), "{run:?}");
    }
    // ...nor store anything.
    let run = phone.run(&["put", src.to_str().unwrap()]).await;
    assert!(run.err().contains("revoked"), "{run:?}");

    // Its signatures are refused by the same verification every device
    // applies to logs it fetches from relays.
    let mut client = Client::open(Home::at(phone.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    let err = client.set_preferred_relays().await.unwrap_err();
    assert!(
        matches!(&err, Error::Log(e) if e.to_string().contains("revoked")),
        "{err}"
    );
    // The laptop's view is unchanged by the attempt.
    let devices = laptop.run(&["device", "list", "--json"]).await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_eq!(devices["revoked"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_cannot_delete_what_the_others_keep() {
    let (a, b, laptop) = laptop_on_two_relays().await;
    let before = data_with_marker(25_000, b"the laptop's");
    let laptops = laptop.put_data("laptops", &before).await;
    let phone = Device::new();
    pair(&laptop, &phone, &b, false, "30").await;
    // Every device of the identity owns its copies on a relay under one
    // key (PROTOCOL.md §10.7): the phone's sync finds the laptop's copies
    // already owned, and the relays see one owner, not two devices.
    let synced = phone.run(&["sync", "--json"]).await.json();
    assert_eq!(synced["claimed"], 0, "{synced}");
    assert_eq!(synced["claims_pending"], 0, "{synced}");
    phone.run(&["config", "--replicas", "2"]).await.ok();
    let phones_data = data_with_marker(30_000, b"the phone's");
    let phones = phone.put_data("phones", &phones_data).await;
    laptop.run(&["sync"]).await.ok();

    // So a removal by either device takes effect at once.
    let passing = laptop.put_data("passing", b"here for a moment").await;
    phone.run(&["sync"]).await.ok();
    let removed = phone.run(&["rm", "passing", "--json"]).await.json();
    assert_eq!(removed["deleted"].as_array().unwrap().len(), 2, "{removed}");
    for relay in [&a, &b] {
        assert_eq!(relay.blob_status(&passing).await, 404);
    }

    // The phone is stolen; the laptop revokes it. The rotation claims
    // every copy under the new generation's owner key and lets go of the
    // old one's claims, so the thief, holding the phone's keys (the old
    // owner key among them), can delete nothing, bypassing the client.
    let revoke = laptop.run(&["device", "revoke", "phone", "--json"]).await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let stolen = Client::open(Home::at(phone.home()), &Passphrase::new(PASSPHRASE)).unwrap();
    for relay in [&a, &b] {
        let key = stolen.upload_key(&relay.handle().key());
        for blob in [&laptops, &phones] {
            let (status, _) = relay.delete_as(&key, blob).await;
            assert_ne!(status, 204, "the thief deleted {blob}");
            assert_eq!(relay.blob_status(blob).await, 200, "{blob}");
        }
    }
    for (name, data) in [("laptops", &before), ("phones", &phones_data)] {
        assert_eq!(&laptop.get_data(name).await, data, "{name}");
    }
    let audit = laptop.run(&["audit", "--json"]).await;
    assert_eq!(audit.code, 0, "{audit:?}");
    // The revocation started the new mailbox with a snapshot: repair keeps
    // it (its operation and its sealed table) with the identity log.
    let repaired = laptop.run(&["repair", "--json"]).await.json();
    let metadata = &repaired["metadata"];
    assert!(
        metadata["failed"].as_array().unwrap().is_empty(),
        "{repaired}"
    );
    assert!(metadata["blobs"].as_u64().unwrap() >= 2, "{repaired}");
    assert_eq!(metadata["renewed"], metadata["blobs"], "{repaired}");

    // The laptop, now the only owner, removes the phone's file for good.
    let removed = laptop.run(&["rm", "phones", "--json"]).await.json();
    assert_eq!(removed["deleted"].as_array().unwrap().len(), 2, "{removed}");
    for relay in [&a, &b] {
        assert_eq!(relay.blob_status(&phones).await, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_enrolls_nothing() {
    let a = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a]).await;
    let phone = Device::new();
    // The approver finds the request (same rendezvous) but the key exchange
    // fails on both sides.
    let (approve, join) = pair(&laptop, &phone, &a, true, "30").await;
    // The joiner tells the approver at once; neither waits for its timeout.
    assert_ne!(approve.code, 0);
    assert!(approve.stdout.contains("codes differ"), "{approve:?}");
    let devices = laptop.run(&["device", "list", "--json"]).await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_ne!(join.code, 0);
    assert!(!phone.home().exists(), "a failed join left a home behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_needs_the_root_key() {
    let a = Relay::start().await;
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop.add_relays(&[&a]).await;
    let root_file = laptop.dir.path().join("root.key");
    laptop
        .run(&["key", "export-root", root_file.to_str().unwrap()])
        .await
        .ok();
    let run = laptop.run(&["key", "forget-root"]).await;
    assert!(run.err().contains("--yes"), "{run:?}");
    laptop.run(&["key", "forget-root", "--yes"]).await.ok();
    let run = laptop
        .run(&["device", "approve", "AAAA-BBBB-CCCC-DDDD", "--wait", "1"])
        .await;
    assert!(run.err().contains("does not hold the root key"), "{run:?}");
    let run = laptop.run(&["key", "phrase"]).await;
    assert!(run.err().contains("does not hold the root key"), "{run:?}");

    // With the exported key file it works.
    let phone = Device::new();
    let joining = Joining::start(&phone, &a, "30").await;
    laptop
        .run(&[
            "device",
            "approve",
            &joining.code,
            "--root-key",
            root_file.to_str().unwrap(),
            "--wait",
            "30",
        ])
        .await
        .ok();
    joining.finish().await.json();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_are_sealed_and_the_home_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let relay = Relay::start().await;
    let device = Device::new();
    device.init("laptop").await;
    device.add_relays(&[&relay]).await;
    device.put_data("note", b"a small file").await;
    // The vault's secret key in its text form, exported outside the home.
    let export = device.dir.path().join("vault.key");
    device
        .run(&["key", "export-vault", export.to_str().unwrap()])
        .await
        .ok();
    let secret = std::fs::read_to_string(&export).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("an age identity line")
        .to_owned();

    let home = device.home();
    for key in ["keys/root.age", "keys/device.age"] {
        let bytes = std::fs::read(home.join(key)).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "),
            "{key} is not sealed with a passphrase"
        );
    }
    let mut dirs = vec![home.clone()];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            for needle in [secret.clone(), secret.to_lowercase(), PASSPHRASE.to_owned()] {
                assert!(
                    !text.contains(&needle),
                    "{} holds a secret in the clear",
                    path.display()
                );
            }
            assert!(
                !text.contains("ed25519-secret:"),
                "{} holds a signing key in the clear",
                path.display()
            );
        }
    }
    assert!(files >= 5, "only {files} files in the home");
}
