//! Every target over its committed corpus, then over mutations of it: a
//! short, deterministic fuzzing run that needs no fuzzing toolchain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use crate::{TARGETS, Target};

/// Mutants tried per corpus input; `CAIRN_FUZZ_MUTANTS` changes it.
const MUTANTS_PER_INPUT: usize = 16;

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The committed inputs of `target`, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("a corpus file");
            (path, data)
        })
        .collect()
}

/// Runs `body` on `input`, turning a finding into a failure that says how to
/// reproduce it.
fn run(target: &Target, input: &[u8], origin: &str) {
    let (name, body) = *target;
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
        let saved = std::env::temp_dir().join(format!("cairn-fuzz-{name}-finding"));
        let _ = std::fs::write(&saved, input);
        panic!(
            "fuzz target {name} failed on {origin}; the input is saved as {} \
             (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz {name} {})",
            saved.display(),
            saved.display()
        );
    }
}

/// xorshift64*: a fixed, seedable sequence, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// One mutant of `input`: the kinds of change libFuzzer starts with.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    let at = rng.below(out.len() + 1);
    match rng.below(6) {
        0 if !out.is_empty() => {
            let i = at.min(out.len() - 1);
            out[i] ^= 1 << rng.below(8);
        }
        1 => out.truncate(at),
        2 => out.insert(at, rng.next().to_le_bytes()[0]),
        3 if !out.is_empty() => {
            let i = at.min(out.len() - 1);
            out[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
        }
        4 => {
            let end = (at + 1 + rng.below(16)).min(out.len());
            let copy = out[at.min(end)..end].to_vec();
            out.splice(at..at, copy);
        }
        _ => {
            let i = at.min(out.len().saturating_sub(1));
            out.drain(i..(i + 1 + rng.below(8)).min(out.len()));
        }
    }
    out
}

#[test]
fn every_binary_has_a_body_and_a_corpus() {
    let mut binaries: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz_targets/")
        .filter_map(|entry| {
            let path = entry.expect("a directory entry").path();
            Some(path.file_stem()?.to_str()?.to_owned())
        })
        .collect();
    binaries.sort();
    let bodies: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(binaries, bodies, "fuzz_targets/ and TARGETS differ");
    for (name, _) in TARGETS {
        assert!(!corpus(name).is_empty(), "no committed corpus for {name}");
    }
}

#[test]
fn committed_corpora_and_their_mutants_find_nothing() {
    let mutants = std::env::var("CAIRN_FUZZ_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MUTANTS_PER_INPUT);
    let mut runs = 0;
    for target in TARGETS {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (path, input) in corpus(target.0) {
            run(target, &input, &path.display().to_string());
            for n in 0..mutants {
                let mutant = mutate(&input, &mut rng);
                run(
                    target,
                    &mutant,
                    &format!("mutant {n} of {}", path.display()),
                );
            }
            runs += 1 + mutants;
        }
    }
    assert!(runs > 0);
}
