-- Mirrors migrations/postgres/0007: audiences.subscriber_count kept by triggers (cascaded deletes fire them too).
CREATE TRIGGER subscriptions_count_insert AFTER INSERT ON subscriptions
WHEN NEW.status IN ('active', 'cancellation_scheduled')
BEGIN
    UPDATE audiences SET subscriber_count = subscriber_count + 1 WHERE store_id = NEW.store_id AND id = NEW.audience_id;
END;

CREATE TRIGGER subscriptions_count_delete AFTER DELETE ON subscriptions
WHEN OLD.status IN ('active', 'cancellation_scheduled')
BEGIN
    UPDATE audiences SET subscriber_count = subscriber_count - 1 WHERE store_id = OLD.store_id AND id = OLD.audience_id;
END;

CREATE TRIGGER subscriptions_count_update AFTER UPDATE OF status ON subscriptions
BEGIN
    UPDATE audiences
    SET subscriber_count = subscriber_count
        - (OLD.status IN ('active', 'cancellation_scheduled'))
        + (NEW.status IN ('active', 'cancellation_scheduled'))
    WHERE store_id = NEW.store_id AND id = NEW.audience_id;
END;
