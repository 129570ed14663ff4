//! Completions and manual pages come from the parser's own definitions.

use std::process::Command;

use crate::common::BIN;

fn cairn(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn completions_cover_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cairn(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in [
            "demo",
            "doctor",
            "repair",
            "replace-unreachable",
            "completions",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = cairn(&["completions", "nosh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn man_pages_are_written_for_every_command() {
    let out = cairn(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH cairn 1"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = cairn(&["man", "--dir", dir.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pages = report["pages"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count() as u64,
        pages,
        "{report}"
    );
    for name in [
        "cairn",
        "cairn-put",
        "cairn-relay-add",
        "cairn-device-join",
        "cairn-doctor",
    ] {
        let page = std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(page.contains(&format!(".TH {name} 1")), "{name}.1: {page}");
    }
    let repair = std::fs::read_to_string(dir.path().join("cairn-repair.1")).unwrap();
    assert!(repair.contains("replace\\-unreachable"), "{repair}");
}
