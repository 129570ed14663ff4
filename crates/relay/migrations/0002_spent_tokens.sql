-- Delete tokens already used, kept until they expire (docs/PROTOCOL.md §7.2):
-- a token replayed to another process, or after a restart, finds its nonce
-- here. Deleting is the one request whose replay would undo something the
-- client did later (a re-upload), so only delete tokens are recorded.
CREATE TABLE spent_tokens (
    nonce      bytea  PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX spent_tokens_by_expiry ON spent_tokens (expires_at);
