//! Capacity transfers between relays, in bytes: a relay over its
//! high-water mark hands bytes on to its peers, in the order
//! [`cairn_policy::capacity::transfer_order`] gives (the relay's own
//! decision), until it is under its low-water mark; each side books the
//! transfer in its reciprocity ledger ([`cairn_policy::standing::Account`]).
//! Free riders transfer out but tell their peers they have no room; a
//! peer takes a transfer only within the credit its ledger allows
//! ([`cairn_policy::standing::Account::takes`]).

use std::collections::BTreeMap;

use cairn_policy::capacity::{PeerRoom, above_high_water, transfer_order, water_mark};
use cairn_policy::standing::Account;

use crate::relay::{Relay, State};
use crate::rng::Rng;
use crate::scenario::Scenario;

/// The relays' peer lists and ledgers.
pub(crate) struct Federation {
    high_permille: u16,
    low_permille: u16,
    credit_permille: u16,
    /// Each relay's peers and its account of each, by peer index.
    ledgers: Vec<BTreeMap<u32, Account>>,
}

/// What a round of transfers did.
#[derive(Clone, Copy, Default)]
pub(crate) struct Relieved {
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// Relays that were over their high-water mark and found no peer
    /// with room.
    pub(crate) stuck: u64,
}

impl Federation {
    /// Peer lists drawn at random, each link known to both ends; `None`
    /// when the scenario has no federation.
    pub(crate) fn new(scenario: &Scenario) -> Option<Self> {
        let f = &scenario.federation;
        if f.peers == 0 {
            return None;
        }
        let count = scenario.relays.count;
        let mut ledgers = vec![BTreeMap::new(); count];
        for i in 0..count {
            let mut rng = Rng::stream(scenario.seed, 3 << 32 | i as u64);
            let mut drawn = 0;
            while drawn < f.peers {
                let pick = rng.below(count);
                let (me, peer) = (u32::try_from(i).ok()?, u32::try_from(pick).ok()?);
                if pick != i && !ledgers[i].contains_key(&peer) {
                    ledgers[i].insert(peer, Account::default());
                    ledgers[pick].insert(me, Account::default());
                    drawn += 1;
                }
            }
        }
        Some(Self {
            high_permille: f.high_water_permille,
            low_permille: f.low_water_permille,
            credit_permille: f.peer_credit_permille,
            ledgers,
        })
    }

    /// One round at `t`: every relay that is up and over its high-water
    /// mark moves `unit` bytes at a time to the first peer in its order
    /// until it is under its low-water mark or no peer has room.
    pub(crate) fn relieve(&mut self, relays: &mut [Relay], t: u64, unit: u64) -> Relieved {
        let mut done = Relieved::default();
        for i in 0..relays.len() {
            let relay = &relays[i];
            if relay.state(t) != State::Up
                || !above_high_water(relay.used, relay.capacity, self.high_permille)
            {
                continue;
            }
            let low = water_mark(relay.capacity, self.low_permille);
            while relays[i].used > low {
                let peers: Vec<u32> = self.ledgers[i].keys().copied().collect();
                let rooms: Vec<PeerRoom> = peers
                    .iter()
                    .map(|&p| {
                        let peer = &relays[p as usize];
                        PeerRoom {
                            standing: self.ledgers[i][&p].standing(),
                            // A peer that is down sends no info; a free
                            // rider says it is full.
                            free: (peer.state(t) == State::Up).then(|| {
                                if peer.free_rider {
                                    0
                                } else {
                                    peer.capacity.saturating_sub(peer.used)
                                }
                            }),
                            total: peer.capacity,
                            max_blob_size: u64::MAX,
                        }
                    })
                    .collect();
                let me = u32::try_from(i).unwrap_or(u32::MAX);
                // The sender offers in its order; a peer whose ledger says
                // the sender has used up its credit refuses, and the next
                // is asked.
                let taker = transfer_order(&rooms, unit, self.low_permille)
                    .into_iter()
                    .map(|k| peers[k])
                    .find(|&p| {
                        let credit = water_mark(relays[p as usize].capacity, self.credit_permille);
                        self.ledgers[p as usize]
                            .get(&me)
                            .is_some_and(|a| a.takes(unit, credit))
                    });
                let Some(to) = taker else {
                    done.stuck += 1;
                    break;
                };
                relays[i].used = relays[i].used.saturating_sub(unit);
                relays[to as usize].used += unit;
                if let Some(account) = self.ledgers[i].get_mut(&to) {
                    account.stored_by_peer += unit;
                    account.transfers_out += 1;
                }
                if let Some(account) = self.ledgers[to as usize].get_mut(&me) {
                    account.stored_for_peer += unit;
                    account.transfers_in += 1;
                }
                done.bytes += unit;
            }
        }
        done
    }
}
