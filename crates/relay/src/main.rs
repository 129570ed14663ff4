//! `cairn-relay`: the daemon an operator runs.

use clap::Parser;

/// A cairn relay: stores, serves and replicates end-to-end encrypted blobs
/// for clients that choose it. It has no accounts and never sees plaintext.
///
/// This build contains the protocol core only; the `serve` and `fsck`
/// commands arrive with the relay daemon (see README.md, "Status").
#[derive(Debug, Parser)]
#[command(name = "cairn-relay", version, about, long_about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let Args {} = Args::parse();
    anyhow::bail!(
        "this build of {} has no relay commands yet; run `cairn-relay --help`",
        cairn_relay::SOFTWARE
    )
}
