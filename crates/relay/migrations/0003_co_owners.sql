-- A blob's owners besides blobs.owner (its uploader, until that key drops
-- its claim): keys that uploaded or claimed a blob the relay held already
-- (docs/PROTOCOL.md §7.3). Each owner's usage counts the blob; the blob goes
-- when the last owner deletes it.
CREATE TABLE co_owners (
    id    bytea NOT NULL,
    owner bytea NOT NULL,
    PRIMARY KEY (id, owner)
);
