//! The relay itself, below its edges: the store, the relay's key and
//! settings, its clock and counters, and its federation with peers. The
//! HTTP API (`http`) and the federation's background work (`federation`)
//! both stand on it; neither reaches into the other for it.

use std::time::Instant;

use cairn_proto::SigningKey;
use cairn_proto::wire::PeerWithRoom;

use crate::Clock;
use crate::config::RelayConfig;
use crate::federation::state::{Federation, INFO_MAX_AGE_SECS};
use crate::metrics::Metrics;
use crate::store::Store;

/// The relay's shared state, one per running relay.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) store: Store,
    pub(crate) key: SigningKey,
    pub(crate) config: RelayConfig,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    pub(crate) federation: Federation,
    pub(crate) started: Instant,
}

impl Node {
    /// Now, in Unix seconds, by the relay's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// Peers whose latest info documents show room, as `relay_full`
    /// refusals list them: where a refused client can go instead.
    pub(crate) fn peers_with_room(&self) -> Vec<PeerWithRoom> {
        self.federation
            // Any room will do for a client sent elsewhere.
            .peers_with_room(1, 1000)
            .iter()
            .map(|p| PeerWithRoom {
                url: p.relay.url.as_str().to_owned(),
                key: p.relay.key,
                capacity_free: p.free(INFO_MAX_AGE_SECS),
            })
            .collect()
    }

    /// Whether usage is above the high-water mark, where blobs start moving
    /// to peers.
    pub(crate) fn above_high_water(&self) -> bool {
        cairn_policy::capacity::above_high_water(
            self.store.usage().0,
            self.store.capacity(),
            self.config.federation.high_water_permille,
        )
    }
}
