-- A session keeps its current refresh token's hash in its own row (issue 15): issuing a session
-- (initialize, connect, verify, an account's login) writes one row instead of two, and a refresh
-- finds the token through this index. `*_refresh_tokens` now hold only exchanged tokens, kept
-- with their session for the grace window and for reuse detection (CONTRACT §4).
ALTER TABLE profile_sessions ADD COLUMN refresh_hash BLOB;
CREATE UNIQUE INDEX profile_sessions_by_refresh ON profile_sessions (store_id, refresh_hash);
ALTER TABLE account_sessions ADD COLUMN refresh_hash BLOB;
CREATE UNIQUE INDEX account_sessions_by_refresh ON account_sessions (refresh_hash);

-- Live tokens move into their sessions (a session has one; the newest wins should there be more),
-- and any other unexchanged row counts as exchanged when it was issued.
UPDATE profile_sessions SET refresh_hash = (
    SELECT t.token_hash FROM profile_refresh_tokens t
    WHERE t.store_id = profile_sessions.store_id AND t.session_id = profile_sessions.id AND t.rotated_at IS NULL
    ORDER BY t.created_at DESC, t.token_hash LIMIT 1);
DELETE FROM profile_refresh_tokens WHERE rotated_at IS NULL AND EXISTS (
    SELECT 1 FROM profile_sessions s
    WHERE s.store_id = profile_refresh_tokens.store_id AND s.id = profile_refresh_tokens.session_id
      AND s.refresh_hash = profile_refresh_tokens.token_hash);
UPDATE profile_refresh_tokens SET rotated_at = created_at WHERE rotated_at IS NULL;

UPDATE account_sessions SET refresh_hash = (
    SELECT t.token_hash FROM account_refresh_tokens t
    WHERE t.session_id = account_sessions.id AND t.rotated_at IS NULL
    ORDER BY t.created_at DESC, t.token_hash LIMIT 1);
DELETE FROM account_refresh_tokens WHERE rotated_at IS NULL AND EXISTS (
    SELECT 1 FROM account_sessions s
    WHERE s.id = account_refresh_tokens.session_id AND s.refresh_hash = account_refresh_tokens.token_hash);
UPDATE account_refresh_tokens SET rotated_at = created_at WHERE rotated_at IS NULL;
