-- A session keeps its current refresh token's hash in its own row (issue 15): issuing a session
-- (initialize, connect, verify, an account's login) writes one row instead of two, and a refresh
-- finds the token through this index. `*_refresh_tokens` now hold only exchanged tokens, kept
-- with their session for the grace window and for reuse detection (CONTRACT §4).
ALTER TABLE profile_sessions ADD COLUMN refresh_hash BYTEA;
CREATE UNIQUE INDEX profile_sessions_by_refresh ON profile_sessions (store_id, refresh_hash);
ALTER TABLE account_sessions ADD COLUMN refresh_hash BYTEA;
CREATE UNIQUE INDEX account_sessions_by_refresh ON account_sessions (refresh_hash);

-- Live tokens move into their sessions (a session has one; the newest wins should there be more),
-- and any other unexchanged row counts as exchanged when it was issued.
UPDATE profile_sessions s SET refresh_hash = t.token_hash
FROM (SELECT DISTINCT ON (store_id, session_id) store_id, session_id, token_hash FROM profile_refresh_tokens
      WHERE rotated_at IS NULL ORDER BY store_id, session_id, created_at DESC, token_hash) t
WHERE s.store_id = t.store_id AND s.id = t.session_id;
DELETE FROM profile_refresh_tokens t USING profile_sessions s
WHERE t.rotated_at IS NULL AND s.store_id = t.store_id AND s.id = t.session_id AND s.refresh_hash = t.token_hash;
UPDATE profile_refresh_tokens SET rotated_at = created_at WHERE rotated_at IS NULL;

UPDATE account_sessions s SET refresh_hash = t.token_hash
FROM (SELECT DISTINCT ON (session_id) session_id, token_hash FROM account_refresh_tokens
      WHERE rotated_at IS NULL ORDER BY session_id, created_at DESC, token_hash) t
WHERE s.id = t.session_id;
DELETE FROM account_refresh_tokens t USING account_sessions s
WHERE t.rotated_at IS NULL AND s.id = t.session_id AND s.refresh_hash = t.token_hash;
UPDATE account_refresh_tokens SET rotated_at = created_at WHERE rotated_at IS NULL;
