-- A version per profile that moves with every committed change to what getMe shows (issue 15):
-- the profile row, its taxonomy values, promo usage, sessions and the magic codes of its address.
-- An instance keeps getMe answers in memory and serves one again only after a one-row read of
-- this column finds it unchanged, so a change made through any instance (or by hand in SQL) is
-- seen at once and a revoked session is refused at once.
--
-- Moved by triggers, so that no writer can forget it, with two exceptions that cost nothing to
-- keep: a row inserted or already updated by the same transaction is not bumped again (its
-- version is new to every other transaction at commit anyway), and inserting a session does not
-- fire a trigger (it would cost every `initialize`, whose profile is new): the one statement that
-- adds a session to an existing profile moves the version itself (Tx::insert_profile_session).
-- Child triggers run once per statement over its transition table, so bulk writes (seed, import)
-- pay one UPDATE a statement, not one a row.
ALTER TABLE profiles ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Any UPDATE of a profile row that does not itself move the version moves it by one.
CREATE FUNCTION profile_version_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER profiles_version BEFORE UPDATE ON profiles FOR EACH ROW
    WHEN (NEW.version = OLD.version) EXECUTE FUNCTION profile_version_moves();

-- Rows keyed by (store_id, profile_id): the profiles of the rows before and after the statement.
CREATE FUNCTION profile_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE profiles p SET version = p.version + 1
        FROM (SELECT DISTINCT store_id, profile_id FROM new_rows) c
        WHERE p.store_id = c.store_id AND p.id = c.profile_id AND p.xmin <> pg_current_xact_id()::xid;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE profiles p SET version = p.version + 1
        FROM (SELECT DISTINCT store_id, profile_id FROM old_rows) c
        WHERE p.store_id = c.store_id AND p.id = c.profile_id AND p.xmin <> pg_current_xact_id()::xid;
    END IF;
    RETURN NULL;
END $$;

-- Magic codes are keyed by address: the profile holding that address in the store.
CREATE FUNCTION profile_codes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE profiles p SET version = p.version + 1
        FROM (SELECT DISTINCT store_id, email_key FROM new_rows) c
        WHERE p.store_id = c.store_id AND p.email_key = c.email_key AND p.xmin <> pg_current_xact_id()::xid;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE profiles p SET version = p.version + 1
        FROM (SELECT DISTINCT store_id, email_key FROM old_rows) c
        WHERE p.store_id = c.store_id AND p.email_key = c.email_key AND p.xmin <> pg_current_xact_id()::xid;
    END IF;
    RETURN NULL;
END $$;

-- A trigger with transition tables has one event (Postgres), hence three per table.
CREATE TRIGGER profile_values_inserted AFTER INSERT ON profile_taxonomy_values
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();
CREATE TRIGGER profile_values_updated AFTER UPDATE ON profile_taxonomy_values
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();
CREATE TRIGGER profile_values_deleted AFTER DELETE ON profile_taxonomy_values
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();

CREATE TRIGGER profile_promo_inserted AFTER INSERT ON profile_promo_usage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();
CREATE TRIGGER profile_promo_updated AFTER UPDATE ON profile_promo_usage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();
CREATE TRIGGER profile_promo_deleted AFTER DELETE ON profile_promo_usage
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();

-- Sessions: updates (refresh, verification, revocation, a merge moving them) and deletions; no
-- INSERT trigger, see above.
CREATE TRIGGER profile_sessions_updated AFTER UPDATE ON profile_sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();
CREATE TRIGGER profile_sessions_deleted AFTER DELETE ON profile_sessions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_rows_changed();

CREATE TRIGGER magic_codes_inserted AFTER INSERT ON magic_codes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_codes_changed();
CREATE TRIGGER magic_codes_updated AFTER UPDATE ON magic_codes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_codes_changed();
CREATE TRIGGER magic_codes_deleted AFTER DELETE ON magic_codes
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION profile_codes_changed();
