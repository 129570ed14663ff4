-- The scale-out index (docs/ARCHITECTURE.md, "Scale-out backends"): the same
-- facts as the embedded index's tables, shared by every relay process.
-- Keys, ids and envelopes are raw bytes; u64 counters are stored as bigint
-- (sizes and times stay far below 2^63; head sequence numbers are stored
-- bit for bit and compared by the relay, never by SQL).

CREATE TABLE blobs (
    id          bytea  PRIMARY KEY,
    size        bigint NOT NULL,
    created     bigint NOT NULL,
    last_access bigint NOT NULL,
    -- The key that uploaded it first; NULL for blobs recovered by a
    -- migration whose source did not record one.
    owner       bytea,
    -- Small blobs live here; NULL means the body is in the object store.
    body        bytea
);
-- GC and transfers read the least recently accessed prefix.
CREATE INDEX blobs_by_access ON blobs (last_access, id);

-- Per-owner bytes, for per-key quotas: sharded like the totals (by the
-- blob id's first byte), so one key's concurrent uploads do not queue on
-- one row; an owner's usage is the sum over its rows.
CREATE TABLE owners (
    owner bytea    NOT NULL,
    shard smallint NOT NULL,
    bytes bigint   NOT NULL,
    PRIMARY KEY (owner, shard)
);

-- Totals, in 256 shards by a blob id's (or mailbox key's) first byte, so
-- that concurrent commits do not queue on one row; a total is the sum over
-- the shards.
CREATE TABLE stats (
    shard smallint PRIMARY KEY,
    bytes bigint NOT NULL,
    blobs bigint NOT NULL,
    heads bigint NOT NULL
);
INSERT INTO stats (shard, bytes, blobs, heads)
    SELECT s, 0, 0, 0 FROM generate_series(0, 255) AS s;

-- Why the relay holds each blob: an all-zero source for a client upload,
-- otherwise the key of the peer relay that handed it over.
CREATE TABLE sources (
    source bytea NOT NULL,
    id     bytea NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX sources_by_blob ON sources (id);

-- Blobs whose responsibility passed to a peer with a verified receipt.
CREATE TABLE forwards (
    id          bytea  PRIMARY KEY,
    peer        bytea  NOT NULL,
    last_access bigint NOT NULL,
    url         text   NOT NULL
);
CREATE INDEX forwards_by_access ON forwards (last_access, id);

-- Mailbox heads (docs/PROTOCOL.md §7.7); slots sort bytewise.
CREATE TABLE heads (
    mailbox     bytea  NOT NULL,
    slot        text   COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    last_access bigint NOT NULL,
    envelope    bytea  NOT NULL,
    PRIMARY KEY (mailbox, slot)
);
CREATE INDEX heads_by_access ON heads (last_access);

-- Objects whose index row is gone but whose body may remain in the object
-- store, because a process stopped between the commit and the delete.
CREATE TABLE pending_unlink (
    id bytea PRIMARY KEY
);

-- Time-limited leases, so that periodic work on shared data (one peer's
-- reconciliation, transfers, audits) runs in one process at a time.
CREATE TABLE leases (
    name   text   PRIMARY KEY,
    holder text   NOT NULL,
    until  bigint NOT NULL
);
