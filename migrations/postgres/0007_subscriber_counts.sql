-- audiences.subscriber_count counts active and cancellation_scheduled subscriptions. A trigger
-- keeps it, so every path (including cascades from profile erasure, merge and the guest sweep)
-- updates it in the same transaction as the change.
CREATE FUNCTION subscriptions_count() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('active', 'cancellation_scheduled') THEN
        UPDATE audiences SET subscriber_count = subscriber_count - 1
        WHERE store_id = OLD.store_id AND id = OLD.audience_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('active', 'cancellation_scheduled') THEN
        UPDATE audiences SET subscriber_count = subscriber_count + 1
        WHERE store_id = NEW.store_id AND id = NEW.audience_id;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER subscriptions_count AFTER INSERT OR DELETE OR UPDATE OF status ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscriptions_count();
