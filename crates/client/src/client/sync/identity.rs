//! Following the identity log through the heads and the operations that
//! announce it: which devices may write, and when.

use std::collections::BTreeSet;

use cairn_proto::{BlobId, VerifyingKey};

use super::state::SyncState;
use super::{Listing, Offline};
use crate::client::Client;
use crate::client::mailbox::{FetchLogError, starting_with};
use crate::crdt::{Change, clock_millis};
use crate::error::Result;
use crate::failures::Failures;
use crate::fork::Choice;
use crate::layout::Layout;
use crate::relay::{Head, RelayClient, Role};

impl Client {
    /// Follows the identity heads the listings show: each log they lead to
    /// that extends this device's is taken up, and a fork is decided by the
    /// root key's authority (`crate::fork`), naming the devices that signed
    /// the branch that lost. Heads that lie about their position, lead to
    /// entries that are not a valid log, or come from a writer the identity
    /// never enrolled are reported and not fetched again. Returns whether
    /// the log changed.
    pub(super) async fn advance_identity(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        listings: &mut [Option<Listing>],
    ) -> Result<bool> {
        let mut heads: Vec<(usize, Head)> = listings
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .flat_map(|(i, l)| l.with_role(Role::Identity).map(move |h| (i, h.clone())))
            .collect();
        heads.sort_by_key(|(_, h)| std::cmp::Reverse(h.seq));
        let start = self.log.state().head();
        let mut tried = BTreeSet::new();
        for (index, head) in heads {
            // A writer this device does not know yet may be a device the
            // log it points at enrolls (a recovered one enrolls itself): it
            // is followed like any other, and only a writer still unknown
            // afterwards is reported (below). A target that proves invalid
            // is not fetched again.
            // This device's own head points at a log it published, and a
            // copy already read need not be fetched again.
            if !tried.insert(head.target)
                || head.writer == Some(self.device_key())
                || self.log.position_of(&head.target).is_some()
                || state.log_copy(&head.target).is_some()
            {
                continue;
            }
            let claim = head.is_owned().then_some(head.seq);
            self.consider_log(state, relays, head.target, claim, Some(index))
                .await?;
        }
        // Only now, with the log settled, can each head's claim be judged,
        // and a head by a device the log just enrolled be named.
        if self.log.state().head() != start {
            for listing in listings.iter_mut().flatten() {
                let heads = std::mem::take(&mut listing.heads);
                listing.heads = self.resolve_heads(&listing.mailbox, heads);
            }
        }
        for (index, listing) in listings.iter().enumerate() {
            let Some(listing) = listing else { continue };
            for head in &listing.heads {
                if let Some(writer) = head.writer
                    && !self.ever_enrolled(&writer)
                {
                    state.note(self.unknown_writer(relays[index].url(), &writer));
                    continue;
                }
                if let Some(detail) = self.implausible(state, head) {
                    state.note(self.finding(
                        "implausible_head",
                        Some(relays[index].url()),
                        head.writer.map(|w| w.to_string()),
                        detail,
                    ));
                }
            }
        }
        Ok(self.log.state().head() != start)
    }

    /// Whether `key` is, or was, a device of this identity (or its root).
    pub(super) fn ever_enrolled(&self, key: &VerifyingKey) -> bool {
        *key == self.config.root
            || self.log.state().devices().contains_key(key)
            || self.log.state().revoked().contains(key)
    }

    /// Fetches the log ending at `target` and takes it up if it extends this
    /// device's or wins a fork against it. `claim` is the position an owned
    /// head said the target is at; a log of another length is refused. A
    /// target that proved invalid is remembered, so a no-change sync does
    /// not fetch it again; an outage proves nothing and is retried.
    async fn consider_log(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        target: BlobId,
        claim: Option<u64>,
        index: Option<usize>,
    ) -> Result<()> {
        if state.refused_targets.contains(&target.to_string()) {
            return Ok(());
        }
        let relay = index.and_then(|i| relays.get(i)).map(RelayClient::url);
        let vaults = self.vault_keys()?;
        let fetched = match crate::client::mailbox::fetch_log(
            &starting_with(relays, index.unwrap_or(0)),
            &self.config.root,
            Some(&self.log),
            target,
            &vaults,
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(FetchLogError::Unavailable(err)) => {
                tracing::debug!(%err, %target, "identity entry unavailable for now");
                return Ok(());
            }
            Err(FetchLogError::Invalid(why)) => {
                state.refuse_target(target);
                state.note(self.finding(
                    "implausible_head",
                    relay,
                    None,
                    format!("names identity entry {target}, which is not a valid log of this identity: {why}"),
                ));
                return Ok(());
            }
        };
        if let Some(seq) = claim
            && fetched.state().last_seq() != seq
        {
            state.refuse_target(target);
            state.note(self.finding(
                "implausible_head",
                relay,
                None,
                format!(
                    "an identity head claims position {seq} for entry {target}, which is at \
                     position {}: a frozen or forged slot (a stolen device?)",
                    fetched.state().last_seq()
                ),
            ));
            return Ok(());
        }
        if self.log.position_of(&target).is_none() {
            state.note_log_copy(target, fetched.state().last_seq());
        }
        match crate::fork::choose(&self.log, fetched) {
            Choice::Keep => {}
            Choice::Extend(log) => {
                self.log = log;
                self.save_log()?;
            }
            Choice::Fork {
                adopt,
                losers,
                by_authority,
            } => {
                let how = if by_authority {
                    "the other branch revokes its signers"
                } else {
                    "neither branch revokes the other's signers; the same branch is kept on \
                     every device"
                };
                for loser in &losers {
                    state.note(self.finding(
                        "forked_identity",
                        relay,
                        Some(loser.to_string()),
                        format!("signed identity entries on a branch that lost ({how})"),
                    ));
                }
                if let Some(log) = adopt {
                    self.log = log;
                    self.save_log()?;
                }
            }
        }
        Ok(())
    }

    /// Why `head`, listed in the mailbox this device reads, cannot be true,
    /// if it cannot. No log, operation sequence or clock reaches 2^64-1 (the
    /// previous release wrote that only into a mailbox it left, which is
    /// never the one read); an owned identity head's `seq` must be the
    /// position of its target. Either is a frozen or forged slot: written
    /// by its owner's key, or, for a legacy head, by anyone holding the
    /// mailbox key.
    fn implausible(&self, state: &SyncState, head: &Head) -> Option<String> {
        let by = match head.writer {
            Some(_) => "its own",
            None => "a legacy (mailbox-signed)",
        };
        // The previous release sealed a mailbox it left with a legacy
        // `identity` head at 2^64-1, and a device behind reads exactly that
        // mailbox: no finding.
        let old_seal = head.role() == Role::Identity && !head.is_owned();
        if head.seq == u64::MAX && !old_seal {
            return Some(format!(
                "{by} head in slot {} claims position 2^64-1: a frozen slot (a stolen device?)",
                head.slot
            ));
        }
        if head.is_owned()
            && head.role() == Role::Identity
            && let Some(position) = self
                .log
                .position_of(&head.target)
                .or_else(|| state.log_copy(&head.target))
            && position != head.seq
        {
            return Some(format!(
                "{by} identity head claims position {} for entry {}, which is at position \
                 {position}: a forged slot (a stolen device?)",
                head.seq, head.target
            ));
        }
        None
    }

    /// Whether `device` may have written an operation at `clock`: it is in
    /// the identity log, and if revoked, wrote before its revocation.
    pub(super) fn may_write(&self, device: &VerifyingKey, clock: u64) -> bool {
        if self.log.state().devices().contains_key(device) {
            return true;
        }
        match self.log.revoked_at(device) {
            Some(revoked_at) => clock_millis(clock) <= revoked_at.0.saturating_mul(1000),
            None => false,
        }
    }

    /// Follows identity-log entries that merged operations announced
    /// beyond this device's log: a device learns of a change (a revocation
    /// above all) from any device it hears from, not only through the
    /// identity heads.
    pub(super) async fn follow_announcements(
        &mut self,
        state: &mut SyncState,
        relays: &[RelayClient],
        announced: Vec<(VerifyingKey, BlobId)>,
    ) -> Result<()> {
        // An announcement names an entry, and entries are blobs of their
        // own only in the shared layout; in the per-relay one the identity
        // heads lead to the sealed copies.
        let vault = self.newest_vault()?;
        if self.layouts().of(vault.generation) != Some(Layout::Shared) {
            return Ok(());
        }
        for (_, target) in announced {
            if self.log.position_of(&target).is_none() {
                self.consider_log(state, relays, target, None, None).await?;
            }
        }
        Ok(())
    }

    /// Brings the identity log up to date from the relays (one listing per
    /// relay), following rotations into the next mailbox. Whether it
    /// changed; a relay that does not answer is passed over.
    pub async fn refresh_identity(&mut self) -> Result<bool> {
        Ok(self.follow_identity().await?.0)
    }

    /// [`Client::refresh_identity`] for showing the identity: when no
    /// relay answers, the log stays as this device last knew it, and the
    /// answer says so (`Some`, with how old it is).
    pub async fn update_identity(&mut self) -> Result<Option<Offline>> {
        match self.follow_identity().await?.1 {
            Some(why) => Ok(Some(Offline::of(&self.load_sync()?, why))),
            None => Ok(None),
        }
    }

    /// Follows the identity log; whether it changed, and, when no relay
    /// answered, why each did not.
    async fn follow_identity(&mut self) -> Result<(bool, Option<Failures>)> {
        let relays = self.relay_clients();
        let mut changed = false;
        loop {
            let mut down = Failures::new();
            let mut listings: Vec<Option<Listing>> = Vec::with_capacity(relays.len());
            for (relay, (mailbox, answer)) in relays.iter().zip(self.list_current(&relays).await?) {
                match answer {
                    Ok((heads, _)) => listings.push(Some(Listing { heads, mailbox })),
                    Err(err) => {
                        down.at(relay.url(), &err);
                        listings.push(None);
                    }
                }
            }
            if !relays.is_empty() && listings.iter().all(Option::is_none) {
                return Ok((changed, Some(down)));
            }
            let mut state = self.load_sync()?;
            let noted = state.noted;
            let advanced = self
                .advance_identity(&mut state, &relays, &mut listings)
                .await?;
            if state.noted != noted {
                self.save_sync(&state)?;
            }
            if !advanced {
                return Ok((changed, None));
            }
            changed = true;
        }
    }

    /// Appends an `identity` operation naming the log's newest entry, so
    /// other devices see the change in this device's log too. Returns
    /// warnings.
    pub(in crate::client) async fn announce_identity(&self, state: &mut SyncState) -> Vec<String> {
        let change = Change::Identity {
            seq: self.log.state().last_seq(),
            head: self.log.state().head(),
        };
        match self.append(state, change).await {
            Ok(failures) => failures,
            Err(err) => vec![format!("announcing the identity change: {err}")],
        }
    }
}
