//! Rotation: leaving a relay without losing anything. Every copy on the old
//! relay is copied (ciphertext, verified by hash, from any good copy) to
//! the new one and checked there with an audit; the change is recorded as
//! moves; only when every copy made it are this device's copies on the old
//! relay deleted and the relay dropped from the set.

use std::collections::BTreeSet;

use serde::Serialize;

use cairn_proto::{BlobId, VerifyingKey};

use super::Client;
use super::relays::RelayAdded;
use crate::crdt::Change;
use crate::error::{Error, Result};
use crate::files::{FileEntry, Place};
use crate::relay::{Deleted, normalize_url};

/// What a rotation did.
#[derive(Clone, Debug, Serialize)]
pub struct RotateReport {
    /// The relay left.
    pub from: String,
    /// The relay that took its copies.
    pub to: String,
    /// Adding the new relay.
    pub added: RelayAdded,
    /// Files whose copy moved.
    pub moved: Vec<String>,
    /// Files whose copy could not be moved, with why (the old relay then
    /// stays in the set).
    pub failed: Vec<String>,
    /// This device's copies deleted from the old relay.
    pub deleted: usize,
    /// Whether the old relay left the set.
    pub removed: bool,
    /// Problems after the move (publishing operation logs to the new
    /// relay), not affecting the copies.
    pub warnings: Vec<String>,
}

impl Client {
    /// Moves every copy on the relay at `from` to the relay at `to` (added
    /// to the set if needed), then deletes this device's copies on `from`
    /// and removes it from the set.
    pub async fn rotate_relay(&mut self, from: &str, to: &str) -> Result<RotateReport> {
        self.require_active()?;
        // Before anything else: an unacceptable URL is the first thing to
        // hear about.
        crate::relay::check_transport(&normalize_url(to)?, self.transport())?;
        let old = self
            .relays
            .get(&normalize_url(from)?)
            .cloned()
            .ok_or_else(|| Error::UnknownRelay {
                url: from.to_owned(),
            })?;
        let added = self.add_relay(to, false).await?;
        let new = added.relay.clone();
        if new.key == old.key {
            return Err(Error::Invalid(
                "the two URLs name the same relay (same key): nothing to rotate".into(),
            ));
        }
        let mut state = self.synced().await?;
        // Everything but the new relay is to be avoided as a target.
        let avoid: BTreeSet<VerifyingKey> = self
            .relays
            .entries()
            .iter()
            .map(|r| r.key)
            .filter(|k| *k != new.key)
            .collect();
        let on_old = |table: &crate::crdt::Table, entry: &FileEntry, blob: &BlobId| {
            table
                .places_of(entry, blob)
                .into_iter()
                .any(|p| p.relay == old.key)
        };
        let files: Vec<(String, FileEntry)> = {
            let table = Self::table_of(&state);
            table
                .stored()
                .filter(|(_, entry)| entry.blobs().any(|blob| on_old(table, entry, blob)))
                .map(|(name, entry)| (name, entry.clone()))
                .collect()
        };
        let mut report = RotateReport {
            from: old.url.clone(),
            to: new.url.clone(),
            added,
            moved: Vec::new(),
            failed: Vec::new(),
            deleted: 0,
            removed: false,
            warnings: Vec::new(),
        };
        let mut changes = Vec::new();
        for (name, entry) in &files {
            // Each blob of the file moves on its own (a chunked file's
            // manifest and chunks); the file has moved once all have.
            let mut failure = None;
            for blob in entry.blobs() {
                let places = Self::table_of(&state).places_of(entry, blob);
                if !places.iter().any(|p| p.relay == old.key) {
                    continue;
                }
                if let Some(there) = places.iter().find(|p| p.relay == new.key) {
                    // Already a copy there: the old one is recorded as moved
                    // onto it, so no device keeps listing (and claiming, and
                    // repairing) a copy on the relay being left.
                    changes.push(Change::Moved {
                        blob: *blob,
                        from: old.key,
                        to: there.clone(),
                    });
                    continue;
                }
                // Other relays' copies first: the old relay may be leaving
                // because it misbehaves.
                let mut sources: Vec<&Place> =
                    places.iter().filter(|p| p.relay != old.key).collect();
                sources.extend(places.iter().filter(|p| p.relay == old.key));
                let size = entry.sealed_size_of(blob);
                let placed = match self.copy_from_any(blob, size, &sources, 1, &avoid).await {
                    Ok(mut placed) => placed
                        .pop()
                        .ok_or_else(|| format!("{} refused the copy", new.url)),
                    Err(err) => Err(err.to_string()),
                };
                match placed {
                    Ok(place) => changes.push(Change::Moved {
                        blob: *blob,
                        from: old.key,
                        to: place,
                    }),
                    Err(why) => {
                        failure = Some(why);
                        break;
                    }
                }
            }
            match failure {
                None => report.moved.push(name.clone()),
                Some(why) => report.failed.push(format!("{name}: {why}")),
            }
        }
        for change in changes {
            self.append(&mut state, change).await?;
        }
        // The old relay's copies have moved: this drops this device's claims
        // there.
        let released = self.finish_change(&mut state).await?;
        report.deleted = released
            .iter()
            .filter(|(_, relay, done)| *relay == old.key && *done == Deleted::Gone)
            .count();
        if !report.failed.is_empty() {
            return Ok(report);
        }
        // Everything is on the new relay: the old one can go.
        let old_relay = self.relay_client(&old.url, old.key);
        let key = self.owner_key(&old.key)?;
        for (_, entry) in &files {
            let ours = entry
                .copies
                .iter()
                .any(|c| c.relay == old.key && self.owns_copies_of(&c.owner));
            if !ours {
                continue;
            }
            for blob in entry.blobs() {
                if matches!(old_relay.delete(blob, &key).await, Ok(Deleted::Gone)) {
                    report.deleted += 1;
                }
            }
        }
        self.remove_relay(&old.url)?;
        report.removed = true;
        // The new relay gets the operation logs it lacks.
        if let Err(err) = self.sync().await {
            report.warnings.push(format!("sync after rotating: {err}"));
        }
        Ok(report)
    }
}
