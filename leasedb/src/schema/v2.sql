-- hostagent lease database, schema version 2: every change to a bound lease (granted, renewed,
-- released, declined; by any agent, or by hand) sends NOTIFY hostagent_lease4 with the network's
-- name, so each agent's lease watch (DNS names) follows the other agents' leases at once.
CREATE FUNCTION hostagent.notify_lease4() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Identical notifications of one transaction are delivered once: a batch of hundreds of
    -- leases is one message per network.
    PERFORM pg_notify('hostagent_lease4', COALESCE(NEW.network, OLD.network));
    RETURN NULL;
END
$$;

CREATE TRIGGER lease4_changed
    AFTER UPDATE ON hostagent.lease4
    FOR EACH ROW
    WHEN (OLD.client IS DISTINCT FROM NEW.client
          OR OLD.expires IS DISTINCT FROM NEW.expires
          OR OLD.hostname IS DISTINCT FROM NEW.hostname
          OR OLD.mac IS DISTINCT FROM NEW.mac)
    EXECUTE FUNCTION hostagent.notify_lease4();

CREATE TRIGGER lease4_removed
    AFTER DELETE ON hostagent.lease4
    FOR EACH ROW
    WHEN (OLD.client IS NOT NULL)
    EXECUTE FUNCTION hostagent.notify_lease4();
