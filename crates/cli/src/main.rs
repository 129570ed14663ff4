//! `cairn`: the command-line client.
//!
//! A thin shell over `cairn-client`: it parses arguments, asks for secrets,
//! calls the library and renders the result as text or JSON. No protocol
//! logic lives here.

mod commands;
mod demo;
mod doctor;
mod inspect;
mod manuals;
mod output;
mod progress;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// cairn keeps your files end-to-end encrypted on relays you choose.
///
/// Your devices hold every key; relays store only sealed blobs and cannot
/// read your data, and one that withholds or alters it is caught and routed
/// around. Each file is stored on several relays, and any one of them is
/// enough to get it back. Relays see no key or device name of yours, but
/// they do see metadata (which blobs, how large, when, how many devices
/// write): docs/THREAT-MODEL.md §3 says what each one learns.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about,
    long_about,
    after_help = "\
Getting started:
  cairn init                          create your identity (write down the 24 words)
  cairn relay add http://127.0.0.1:7070
  cairn put notes.txt                 seal and store on up to 3 relays
  cairn ls
  cairn get notes.txt -o copy.txt     fetch, verify every byte, decrypt
  cairn folder add ~/Documents        keep a directory the same on every device

Secrets: the passphrase comes from CAIRN_PASSPHRASE or is asked for.
Every command takes --json for scripts, --verbose (-v) for the detail
behind a message, and --home (or CAIRN_HOME).
Relays are reached over https://, or http:// on this machine only, unless
--insecure (see its help).
A relay silent for 60 s is given up for the next (CAIRN_READ_TIMEOUT_SECS).
Chunks of removed files are kept a day before they are let go of, in case
another device is storing a file that reuses them (CAIRN_CHUNK_HOLD_SECS).
Progress bars appear only when standard error is a terminal.
New here? `cairn demo` runs a whole network on this machine; `cairn doctor`
checks your setup.

Exit codes:
  0  done
  1  done, and something needs attention: `doctor`, `audit`, `repair` and
     `relay check` found a problem, `relay rotate` could not move every copy
     (the old relay stays), `inspect` met a signature that does not
     verify, or `folder add`, `folder sync` or `folder status` left
     something undone (a paused folder, deletions held, a path not synced)
  2  not done: bad arguments, no home, wrong passphrase, relays unreachable,
     or another error (the message says what to do)"
)]
struct Args {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, ClapArgs)]
struct Global {
    /// Where this device's keys and settings live.
    #[arg(long, global = true, env = "CAIRN_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print one JSON document instead of text (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Say more of what went wrong: after each message, the lower-level
    /// account behind it (what the HTTP library said of a relay that could
    /// not be reached, with the URL it asked for).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Allow plain http:// to relays on other machines (relay add, init
    /// --recover, device join, relay rotate, and transfer redirects).
    /// Without it, http:// is allowed only to loopback (127.0.0.0/8, ::1,
    /// localhost). Over plain http, upload tokens, keys, pairing messages
    /// and the identity log cross the network readable and alterable, and
    /// the relay's key is pinned over a channel that authenticates nothing:
    /// use it only where the network path itself is trusted.
    #[arg(long, global = true)]
    insecure: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new identity on this device, or recover one.
    ///
    /// Creates a root key, this device's keys, the first vault key and the
    /// identity log, and shows the 24-word recovery phrase: anyone with it
    /// controls the identity, and without it a lost last device means lost
    /// data. Key files are sealed with a passphrase.
    #[command(after_help = "\
Examples:
  cairn init --name laptop
  cairn init --recover --relay https://relay.example   (asks for the 24 words)")]
    Init {
        /// This device's name, as other devices will see it.
        #[arg(long, default_value = "this device")]
        name: String,
        /// Recover an existing identity from its recovery phrase (read from
        /// CAIRN_RECOVERY_PHRASE or asked for) instead of creating one.
        #[arg(long, requires = "relay")]
        recover: bool,
        /// With --recover: a relay that holds the identity.
        #[arg(long, value_name = "URL")]
        relay: Option<String>,
    },
    /// Manage keys: export them, or keep the root key off this device.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Choose relays: add, list, remove, check.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Seal a file and store it on several relays.
    ///
    /// Succeeds only when the configured number of relays (default 3, or
    /// every relay when there are fewer) acknowledged a durable copy. A file
    /// larger than one chunk (2 MiB on average) goes as chunks, each sent to
    /// every relay while the next is read; chunks your identity already
    /// stored are claimed rather than sent again, so an edit sends only the
    /// chunks around it, and a put that stopped part-way, run again, sends
    /// only what no relay acknowledged.
    #[command(after_help = "\
Examples:
  cairn put photo.jpg
  cairn put *.jpg                     several files, one sync
  cairn put report.pdf --name work/report-2026.pdf
  tar c dir | cairn put - --name dir.tar")]
    Put {
        /// The files to store, or `-` for standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The name to store it under (default: the file's name); only with
        /// one file.
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch a stored file, verify it and decrypt it.
    ///
    /// Tries the fastest relay first and falls back to the next on any
    /// error or wrong byte.
    #[command(after_help = "\
Examples:
  cairn get photo.jpg -o photo.jpg
  cairn get work/report-2026.pdf > report.pdf
  cairn get 3f1c…(64 hex digits) -o blob.bin
  cairn get video.mkv --range 1048576-2097151 -o part.bin")]
    Get {
        /// A stored name, or a blob id.
        what: String,
        /// Write here (atomically) instead of to standard output (`-`: to
        /// standard output, which a file stored as chunks starts getting
        /// as soon as its first chunk is verified).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only bytes START to END of the file (both included; `START-` for
        /// the rest of it). A file stored as chunks fetches only the chunks
        /// the range meets.
        #[arg(long, value_name = "START-END")]
        range: Option<cairn_client::RangeSpec>,
    },
    /// List stored files.
    Ls,
    /// Write every stored file, verified and decrypted, into a directory.
    ///
    /// The way out: afterwards the files are ordinary plain files that need
    /// nothing of cairn. DIR must not exist or be empty, so nothing is
    /// replaced. Stored names become paths under DIR; a name that is not a
    /// safe relative path (`..`, an absolute path, an empty part) is
    /// written at the top under an escaped form and reported. The files
    /// are plaintext: keep DIR somewhere only you can read. Exits 1 when a
    /// file could not be fetched from any relay (the others are written).
    #[command(after_help = "\
Examples:
  cairn export ~/cairn-export
  cairn export ~/cairn-export --json | jq '.failed'")]
    Export {
        /// The directory to write into (made if missing).
        dir: PathBuf,
    },
    /// Rename a stored file.
    Mv {
        /// Its current name.
        from: String,
        /// The new name (replaced if it exists).
        to: String,
    },
    /// Bring this device up to date with your other devices.
    ///
    /// Reads every device's newest head from every relay (one request per
    /// relay when nothing changed), fetches and verifies new operations,
    /// merges them, and sends relays that are behind what they lack. It
    /// then claims the copies your other devices stored, so that they stay
    /// until this device lets go of them too, and lets go of copies no
    /// file lists any more. Relays serving old heads and devices signing
    /// conflicting operations are reported.
    #[command(
        after_help = "Examples:\n  cairn sync\n  cairn sync --watch        keep syncing, backing off while nothing changes"
    )]
    Sync {
        /// Keep syncing: every 2 s after a change, backing off to 60 s while
        /// nothing changes; and repair (`cairn repair`, which replaces
        /// copies on a relay that has not answered this device for 3 days)
        /// at the start and then every quarter of the shortest retention
        /// your relays disclose (at most every 6 h). Stop with Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many rounds (for scripts).
        #[arg(long, value_name = "N", requires = "watch")]
        rounds: Option<u64>,
    },
    /// Show per-relay and per-device sync state, recent findings, and
    /// relays worth replacing: silent for a week, or seen losing a copy
    /// sooner than the retention they disclose.
    Status,
    /// Keep a directory the same on every device: synced folders.
    ///
    /// A folder carries files (as chunks: an edit sends little), empty
    /// directories, symbolic links (never followed), modification times
    /// and the execute bit; deletions and renames carry over, a rename
    /// without an upload. Conflicting edits keep both files: the one that
    /// reached the relays first keeps the name, the other becomes
    /// NAME.conflict-DEVICE-DATE.EXT on every device. An edit always wins
    /// over a deletion. Replaced and deleted files are kept as versions
    /// for 30 days. A `.cairnignore` at the folder's root (gitignore
    /// syntax) leaves paths out; editor swap files and .DS_Store are left
    /// out anyway.
    #[command(subcommand)]
    Folder(FolderCommand),
    /// Keep every file at its wanted number of good copies.
    ///
    /// Audits every copy (which also renews its retention on the relay),
    /// and replaces copies that are missing or fail their proof with new
    /// copies on other relays of your set, made from a good copy (no
    /// decryption needed). Copies on a relay that does not answer are
    /// reported, and kept while it may only be down: they are replaced once
    /// the relay has not answered this device for 3 days (this device's
    /// own record of its requests), or at once with --replace-unreachable.
    /// It also keeps
    /// what a new device or a recovery needs (the identity log, the newest
    /// snapshot and the operations after it) on every relay, renewing it
    /// and restoring what a relay lost. Run it more often than your
    /// relays' shortest retention (`sync --watch` does). Exits 1 when a
    /// file is left short of good copies.
    #[command(
        after_help = "Examples:\n  cairn repair\n  cairn repair --replace-unreachable   # a relay is gone for good: do not wait 3 days"
    )]
    Repair {
        /// Replace copies on relays that do not answer now, rather than
        /// once they have not answered for 3 days (for a relay you know is
        /// gone for good, not one that is briefly down).
        #[arg(long)]
        replace_unreachable: bool,
    },
    /// Ask relays to prove they still hold your files' copies.
    ///
    /// For each copy, the relay must return random 1 KiB chunks with a
    /// BLAKE3 proof that leads to the blob id: a relay that lost, cut or
    /// altered a copy fails, and fresh chunks each time mean it cannot keep
    /// answers ready instead of the data. Costs a few kB per copy, not the
    /// file. Exits 1 when a relay is missing a copy or fails a proof.
    #[command(
        after_help = "Examples:\n  cairn audit\n  cairn audit --sample 20 --json   20 random files, JSON report"
    )]
    Audit {
        /// Audit this many files, chosen at random (default: all).
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
        /// Random chunks asked of each copy (1–64).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=64))]
        chunks: u8,
    },
    /// Remove a stored file and drop this device's claims on its copies.
    ///
    /// A relay deletes a copy once every device that claimed it has let go:
    /// your other devices do when they next sync the removal. So no single
    /// device, stolen or revoked, can delete what the others keep.
    Rm {
        /// The stored name.
        name: String,
    },
    /// Show this identity's devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show or change settings.
    Config {
        /// How many relays each file is stored on.
        #[arg(long)]
        replicas: Option<usize>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  cairn completions bash > ~/.local/share/bash-completion/completions/cairn\n  cairn completions zsh > ~/.zfunc/_cairn\n  cairn completions fish > ~/.config/fish/completions/cairn.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write one page per command into a
    /// directory.
    #[command(after_help = "Example:\n  cairn man --dir ~/.local/share/man/man1 && man cairn-put")]
    Man {
        /// Write cairn.1 and a page per command (cairn-put.1, …) here.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check this device's setup and say what to do about each problem.
    ///
    /// Unlocks the keys, checks that the home is private, whether the root
    /// key is on this device, that there are enough relays, that each
    /// answers with a document signed by its pinned key, clock skew against
    /// each, relays that misbehaved or lack copies, and the shortest
    /// retention (how often `cairn repair` must run). Exits 0 when nothing
    /// failed (warnings allowed), 1 when something did.
    #[command(
        after_help = "Example:\n  cairn doctor\n  cairn doctor --json | jq '.[] | select(.status != \"ok\")'"
    )]
    Doctor,
    /// Run a whole cairn network on this machine and walk through it.
    ///
    /// Starts four relays in this process (three for the file and a spare),
    /// each on a free loopback port with its data in a temporary directory,
    /// and two devices, a laptop and a phone. Then, printing each command
    /// before running it: the laptop creates an identity and stores a file
    /// on three relays; the phone joins with a pairing code and opens the
    /// file; relay B fails and the file is still readable; the laptop adds
    /// the spare and repairs back to three copies. The relays then keep
    /// running, with their status pages, until Ctrl-C; everything is
    /// removed on exit.
    #[command(after_help = "Example:\n  cargo run --release --bin cairn -- demo")]
    Demo {
        /// Exit after the walk-through instead of waiting for Ctrl-C.
        #[arg(long)]
        no_wait: bool,
    },
    /// Decode a signed record, check its signature and show what it says.
    ///
    /// Exits 0 when the signature verifies, 1 when it does not, 2 when the
    /// input is not a record at all.
    Inspect {
        /// The record: unpadded base64url text, `@PATH` for a file holding
        /// raw envelope bytes or base64url text, or `-` for standard input.
        record: String,
    },
}

#[derive(Debug, Subcommand)]
enum FolderCommand {
    /// Share a directory as a folder, or attach a folder another device
    /// shared.
    ///
    /// A folder of that name in the vault is attached here (its files are
    /// fetched; files already here that match by size and modification
    /// time are kept as they are, others become conflict copies); else a
    /// new folder is made from the directory. A `.cairn-folder` marker is
    /// written at the root: a root without it (a disk not mounted) pauses
    /// the folder instead of reading as everything deleted.
    #[command(after_help = "\
Examples:
  cairn folder add ~/Documents                   (shares it as \"Documents\")
  cairn folder add ~/docs --name Documents       (on another device)")]
    Add {
        /// The directory (made if missing).
        dir: PathBuf,
        /// The folder's name in the vault (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the vault's folders and where each is attached here.
    Ls,
    /// One two-way pass over every attached folder, or one.
    ///
    /// Sends what changed here, fetches what changed elsewhere. Reading
    /// the disk costs only metadata: a file is read only when its size or
    /// modification time changed, or when it was written within 2 s of the
    /// pass before (a second write in the same clock tick can leave both
    /// as they were, so its content is compared). When more than 10 files, and more than a
    /// quarter of the folder, were deleted here since the last pass, the
    /// deletions are held back (reported, nothing else is held) until a
    /// pass with --allow-deletes.
    Sync {
        /// Only this folder.
        name: Option<String>,
        /// Apply a mass deletion made here.
        #[arg(long)]
        allow_deletes: bool,
    },
    /// Keep every attached folder in sync until stopped.
    ///
    /// Passes when files here settle after a change (file-system events,
    /// then a quiet time, so a file still being written is not taken half
    /// way), and when the relays say another device wrote (asked every
    /// --poll seconds: one request per relay when nothing changed). A mass
    /// deletion is held and reported, as by `folder sync`, until a pass
    /// with --allow-deletes; a folder whose root is gone is reported and
    /// retried. contrib/cairn-folder.service runs it as a systemd user
    /// service.
    #[command(after_help = "\
Examples:
  cairn folder watch
  systemctl --user enable --now cairn-folder   (see contrib/cairn-folder.service)")]
    Watch {
        /// Quiet seconds after the last change here before a pass.
        #[arg(long, default_value_t = 2, value_name = "SECS")]
        settle: u64,
        /// Seconds between asking the relays whether another device wrote.
        #[arg(long, default_value_t = 15, value_name = "SECS")]
        poll: u64,
        /// Stop after this many passes (for scripts).
        #[arg(long, value_name = "N")]
        passes: Option<u64>,
    },
    /// Where each attached folder stands: changes pending here and there,
    /// held deletions, conflicts, when it last converged. Reads the disk
    /// and this device's last sync; asks no relay.
    Status {
        /// Only this folder.
        name: Option<String>,
    },
    /// List the versions the vault keeps of a file in a folder (deleted
    /// files too).
    #[command(after_help = "\
Examples:
  cairn folder versions ~/Documents/report.odt
  cairn folder versions --folder Documents report.odt")]
    Versions {
        /// The file: a path on disk inside an attached folder, or with
        /// --folder, its path inside the folder.
        path: PathBuf,
        /// The folder PATH is in (then PATH is relative to its root).
        #[arg(long, value_name = "NAME")]
        folder: Option<String>,
    },
    /// Bring back a version of a file in a folder.
    ///
    /// Without -o, the version becomes the file's content again on every
    /// device (a change here not yet synced is kept as a conflict copy).
    /// With -o, it is only written to that file.
    #[command(after_help = "\
Examples:
  cairn folder restore ~/Documents/report.odt              (the version before the current one)
  cairn folder restore ~/Documents/gone.txt                (a deleted file)
  cairn folder restore ~/Documents/a.txt --at 2026-12-01T09:00:00 -o /tmp/a.txt")]
    Restore {
        /// The file, as for `versions`.
        path: PathBuf,
        /// The folder PATH is in (then PATH is relative to its root).
        #[arg(long, value_name = "NAME")]
        folder: Option<String>,
        /// The version the file held at this time: Unix seconds, or
        /// YYYY-MM-DD[THH:MM[:SS]] in UTC. Default: the newest version that
        /// is not its content now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Write the version to this file instead.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Stop syncing a folder on this device; its files stay here and in
    /// the vault.
    Detach {
        /// The folder.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Write every vault key to FILE as an age identity file.
    ///
    /// With it, the standard `age` tool decrypts any blob you stored:
    /// `age -d -i FILE BLOB | head -c SIZE` (SIZE from `cairn ls --json`).
    ExportVault {
        /// Where to write it (mode 0600).
        file: PathBuf,
    },
    /// Write the root key to FILE, sealed with your passphrase, to keep
    /// offline.
    ExportRoot {
        /// Where to write it (mode 0600).
        file: PathBuf,
    },
    /// Delete the root key from this device (after exporting it or writing
    /// down the recovery phrase).
    ForgetRoot {
        /// Confirm: without the root key here, enrolling and revoking
        /// devices needs the exported file or the recovery phrase.
        #[arg(long)]
        yes: bool,
    },
    /// Show the 24-word recovery phrase again (needs the root key here).
    Phrase,
    /// Rotate the vault key without revoking a device (needs the root key).
    ///
    /// New data is sealed to the next generation, and the identity moves to
    /// new mailboxes, one per relay. An identity made before protocol
    /// revision 3 leaves the shared layout this way, in which every relay
    /// can read its device keys and names (`cairn doctor` says when).
    Rotate {
        /// The exported root key, when it is not on this device.
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Add a relay: verify its signed info document and pin its key.
    #[command(after_help = "Example:\n  cairn relay add https://relay.example")]
    Add {
        /// The relay's base URL.
        url: String,
        /// Accept that a relay already in the set now presents another key.
        #[arg(long)]
        accept_new_key: bool,
    },
    /// List the relay set.
    List,
    /// Remove a relay from the set (its copies expire by its retention).
    Remove {
        /// The relay's base URL.
        url: String,
    },
    /// Leave a relay without losing anything: copy everything on OLD to
    /// NEW (added to the set if needed), check each copy there with an
    /// audit, record the moves, then delete this device's copies on OLD and
    /// remove it from the set. If any copy cannot be moved, OLD stays.
    #[command(
        after_help = "Example:\n  cairn relay rotate https://old.example https://new.example"
    )]
    Rotate {
        /// The relay to leave.
        from: String,
        /// The relay to move to.
        to: String,
    },
    /// Check health, latency, capacity, retention and key pin.
    Check {
        /// Only this relay.
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List the identity's devices.
    List,
    /// Join an existing identity as a new device (run on the new device).
    ///
    /// Shows a pairing code; type it into `cairn device approve` on a
    /// device that holds the root key. The code is never sent anywhere: the
    /// two devices prove to each other that they know it (SPAKE2), so
    /// neither a relay nor an eavesdropper can enroll itself or read the
    /// keys.
    #[command(
        after_help = "Example:\n  cairn device join --relay https://relay.example --name phone"
    )]
    Join {
        /// One of the identity's relays.
        #[arg(long, value_name = "URL")]
        relay: String,
        /// This device's name.
        #[arg(long, default_value = "new device")]
        name: String,
        /// Seconds to wait for the approval.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        wait: u64,
    },
    /// Approve a device waiting in `cairn device join` (needs the root key).
    #[command(after_help = "Example:\n  cairn device approve K7QF-9XM2-PT4R-H3JD")]
    Approve {
        /// The code the new device shows.
        code: String,
        /// Seconds to wait for the new device.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        wait: u64,
        /// The exported root key, when it is not on this device.
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
    },
    /// Revoke a device: it can no longer change anything, and new data is
    /// sealed to a new vault key it does not have (needs the root key).
    Revoke {
        /// The device's name or key (see `cairn device list`).
        device: String,
        /// The exported root key, when it is not on this device.
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.global.json;
    output::set_verbose(args.global.verbose);
    match commands::run(args) {
        Ok(code) => code,
        Err(err) => {
            output::report_error(&err, json);
            ExitCode::from(2)
        }
    }
}
