//! The words for one folder pass, printed by `folder sync` and by each
//! round of `folder watch`.

use cairn_client::FolderPass;

use crate::output::{bytes, count};

/// What a pass did, a line per kind of thing, then its conflicts, held
/// deletions, skipped paths and problems.
pub(super) fn pass_summary(pass: &FolderPass) -> String {
    let mut parts = Vec::new();
    if pass.sent > 0 {
        parts.push(format!(
            "sent {} ({}; {} to relays, every copy counted)",
            count(pass.sent as u64, "file", "files"),
            bytes(pass.sent_bytes),
            bytes(pass.uploaded_bytes)
        ));
    }
    if pass.relisted > 0 {
        parts.push(format!(
            "{} renamed or kept without an upload",
            count(pass.relisted as u64, "file", "files")
        ));
    }
    if pass.fetched > 0 {
        parts.push(format!(
            "fetched {} ({})",
            count(pass.fetched as u64, "file", "files"),
            bytes(pass.fetched_bytes)
        ));
    }
    if pass.moved_here > 0 {
        parts.push(format!(
            "{} moved or copied here without a download",
            count(pass.moved_here as u64, "file", "files")
        ));
    }
    if pass.deleted_elsewhere > 0 {
        parts.push(format!(
            "{} sent",
            count(pass.deleted_elsewhere as u64, "deletion", "deletions")
        ));
    }
    if pass.deleted_here > 0 {
        parts.push(format!("{} deleted here", pass.deleted_here));
    }
    let mut text = if parts.is_empty() {
        "  nothing to do: in sync".to_owned()
    } else {
        format!("  {}", parts.join(", "))
    };
    for conflict in &pass.conflicts {
        text.push_str(&format!(
            "\n  conflict: this device's version kept as {conflict}"
        ));
    }
    if pass.held_deletes > 0 {
        text.push_str(&format!(
            "\n  {} held back as a mass deletion (nothing else was held): check the folder, \
             then `cairn folder sync {:?} --allow-deletes`",
            count(pass.held_deletes as u64, "deletion", "deletions"),
            pass.name
        ));
    }
    for skipped in &pass.skipped {
        text.push_str(&format!("\n  skipped {skipped}"));
    }
    for problem in &pass.problems {
        text.push_str(&format!("\n  not done: {problem}"));
    }
    text
}
