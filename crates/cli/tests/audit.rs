//! `cairn audit`: relays prove with slice proofs that they hold each copy;
//! one that altered a copy, and one that lost it, are told apart from the
//! honest one, and the exit code says something is wrong.

use crate::common::{Device, Relay, data_with_marker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tells_an_honest_relay_from_one_that_altered_and_one_that_lost_a_copy() {
    let relays = [
        Relay::start().await,
        Relay::start().await,
        Relay::start().await,
    ];
    let laptop = Device::new();
    laptop.init("laptop").await;
    laptop
        .add_relays(&[&relays[0], &relays[1], &relays[2]])
        .await;
    let data = data_with_marker(300_000, b"an audited file");
    let src = laptop.dir.path().join("audited");
    std::fs::write(&src, &data).unwrap();
    let put = laptop
        .run(&["put", src.to_str().unwrap(), "--json"])
        .await
        .json();
    let id = put["blob"].as_str().unwrap().to_owned();

    // All honest: every copy passes, for a few kB of proof.
    let clean = laptop.run(&["audit", "--json"]).await;
    let report = clean.json();
    assert_eq!(report["copies"], 3, "{report}");
    for relay in report["relays"].as_array().unwrap() {
        assert_eq!(relay["passed"], 1, "{report}");
    }
    let proof_bytes = report["proof_bytes"].as_u64().unwrap();
    assert!(proof_bytes < 3 * 32 * 1024, "{proof_bytes} bytes of proof");

    // The second relay's copy is altered on its disk (same length), the
    // third's is gone.
    let altered = relays[1].blob_file(&id).expect("a 300 kB blob is a file");
    let mut bytes = std::fs::read(&altered).unwrap();
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    std::fs::write(&altered, bytes).unwrap();
    std::fs::remove_file(relays[2].blob_file(&id).unwrap()).unwrap();

    let run = laptop.run(&["audit", "--json"]).await;
    assert_eq!(run.code, 1, "misbehaviour exits 1: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let by_url = |url: String| {
        report["relays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == url)
            .unwrap()
            .clone()
    };
    let honest = by_url(relays[0].url());
    assert_eq!(
        (&honest["passed"], &honest["failed"]),
        (&1.into(), &0.into())
    );
    let liar = by_url(relays[1].url());
    assert_eq!(liar["failed"], 1, "{report}");
    assert!(
        liar["problems"][0].as_str().unwrap().contains("audit"),
        "{liar}"
    );
    let loser = by_url(relays[2].url());
    assert_eq!(loser["missing"], 1, "{report}");

    // People get the same verdicts.
    let text = laptop.run(&["audit"]).await;
    assert!(text.stdout.contains("MISBEHAVING"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("ok          {}", relays[0].url())),
        "{}",
        text.stdout
    );
}
