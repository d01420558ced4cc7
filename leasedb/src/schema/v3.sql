-- hostagent lease database, schema version 3: batch4 (below: a DHCP batch in one call), and the
-- lease-change notification also names the
-- session that made the change, as '<network>' || E'\n' || application_name (an agent's
-- sessions are "hostagent <agent>"). An agent keeps its own changes in memory as it commits
-- them, and reads the leases again only for a change it did not make: another agent's, or a
-- hand edit's (psql and others name themselves).
CREATE OR REPLACE FUNCTION hostagent.notify_lease4() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Identical notifications of one transaction are delivered once: a batch of hundreds of
    -- leases is one message per network.
    PERFORM pg_notify('hostagent_lease4',
                      COALESCE(NEW.network, OLD.network) || E'\n'
                      || current_setting('application_name'));
    RETURN NULL;
END
$$;

-- A DHCP batch's questions in one call (one round trip): element i of the arrays is client
-- message i, answered by the function of its p_op ('offer' offer4, 'request' request4,
-- 'release' release4, 'decline' decline4, 'forget' forget_holds4), in order, each seeing what
-- the ones before it did, exactly as if called one by one in the batch's transaction. Row i
-- answers message i: o_ip (offer), o_outcome/o_hostname/o_reserved (request), o_done
-- (release, decline). The search for a free address goes on after each address offered.
CREATE FUNCTION hostagent.batch4(p_network text, p_first inet, p_last inet, p_server inet,
                                 p_agent text, p_now bigint, p_hold bigint, p_expires bigint,
                                 p_until bigint, p_after inet,
                                 p_op text[], p_key bytea[], p_mac macaddr[],
                                 p_client_id bytea[], p_ip inet[], p_hostname text[])
RETURNS TABLE (o_ip inet, o_outcome text, o_hostname text, o_reserved inet, o_done boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_after inet := p_after;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_op, 1), 0) LOOP
        o_ip := NULL;
        o_outcome := NULL;
        o_hostname := NULL;
        o_reserved := NULL;
        o_done := NULL;
        CASE p_op[i]
        WHEN 'offer' THEN
            o_ip := hostagent.offer4(p_network, p_key[i], p_mac[i], p_ip[i], p_now, p_first,
                                     p_last, p_server, p_hold, p_agent, v_after);
            IF o_ip IS NOT NULL THEN
                v_after := o_ip;
            END IF;
        WHEN 'request' THEN
            SELECT q.o_outcome, q.o_hostname, q.o_reserved
              INTO o_outcome, o_hostname, o_reserved
              FROM hostagent.request4(p_network, p_key[i], p_mac[i], p_client_id[i], p_ip[i],
                                      p_hostname[i], p_now, p_expires, p_first, p_last,
                                      p_server, p_agent) q;
        WHEN 'release' THEN
            o_done := hostagent.release4(p_network, p_key[i], p_ip[i], p_agent);
        WHEN 'decline' THEN
            o_done := hostagent.decline4(p_network, p_key[i], p_ip[i], p_now, p_until, p_agent);
        WHEN 'forget' THEN
            PERFORM hostagent.forget_holds4(p_network, p_key[i], p_ip[i]);
        ELSE
            RAISE EXCEPTION 'hostagent.batch4: unknown operation %', p_op[i];
        END CASE;
        RETURN NEXT;
    END LOOP;
END
$$;
