-- hostagent lease database, schema version 1: one row per IPv4 address, reservations, and the
-- functions every agent allocates through. Applied by the agent (leasedb::schema) inside one
-- transaction; never edit a released migration, add the next one.
--
-- One row per address of every network's range (created by prepare4) and per address ever
-- leased outside it (a reservation). The primary key (network, ip) is what makes an address
-- belong to at most one client: every change to a lease is an UPDATE of that one row, under its
-- row lock, in the agent's batch transaction.
CREATE TABLE hostagent.lease4 (
    network          text        NOT NULL,  -- the [[network]] name, the same on every agent
    ip               inet        NOT NULL,
    -- Who holds the lease: 01 + MAC for a client known by its MAC (no option 61, or an
    -- Ethernet-type one), else its client identifier as sent. NULL: no lease on this address.
    client           bytea,
    mac              macaddr,               -- chaddr when it last asked
    client_id        bytea,                 -- option 61 as sent, when usable
    hostname         text,                  -- option 12 (or the reservation's name)
    expires          bigint      NOT NULL DEFAULT 0,  -- unix seconds
    agent            text,                  -- the agent that granted or last renewed (or freed) it
    -- An offer in flight: nobody else is offered this address before hold_until.
    hold_client      bytea,
    hold_until       bigint      NOT NULL DEFAULT 0,
    hold_agent       text,
    -- A client declined the address (found it in use): nobody gets it before this.
    quarantine_until bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (network, ip),
    CHECK (family(ip) = 4 AND masklen(ip) = 32),
    CHECK ((client IS NULL) = (mac IS NULL))
);
CREATE INDEX lease4_by_client ON hostagent.lease4 (network, client) WHERE client IS NOT NULL;
CREATE INDEX lease4_by_hold ON hostagent.lease4 (network, hold_client) WHERE hold_client IS NOT NULL;
-- The candidates for a new client: never leased (or given back), lowest first ...
CREATE INDEX lease4_free ON hostagent.lease4 (network, ip) WHERE client IS NULL;
-- ... then the leases that ended longest ago. Not partial on `client IS NOT NULL` like
-- lease4_by_client: with the statistics of a fresh range (every client NULL) the planner costs
-- two such partial indexes alike and looked clients up through this one, reading every lease.
-- It is only walked when no address is free, so the free rows' expires = 0 cost little.
CREATE INDEX lease4_by_expiry ON hostagent.lease4 (network, expires);

-- Static reservations, as each agent's config has them (set_reservations4 replaces an agent's
-- own rows at start). Every agent honours every agent's: a reserved address goes to nobody
-- else, and its MAC gets it from any agent.
CREATE TABLE hostagent.reservation4 (
    network text    NOT NULL,
    agent   text    NOT NULL,
    mac     macaddr NOT NULL,
    ip      inet    NOT NULL,
    PRIMARY KEY (network, agent, mac),
    CHECK (family(ip) = 4 AND masklen(ip) = 32)
);
CREATE INDEX reservation4_by_ip ON hostagent.reservation4 (network, ip);
CREATE INDEX reservation4_by_mac ON hostagent.reservation4 (network, mac);

-- The rows of a network's dynamic range (idempotent; several agents may run it at once).
CREATE FUNCTION hostagent.prepare4(p_network text, p_first inet, p_last inet) RETURNS bigint
LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO hostagent.lease4 (network, ip)
        SELECT p_network, p_first + g FROM generate_series(0, p_last - p_first) AS g
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM added
$$;

-- Replace one agent's reservations of a network; returns the other agents' reservations that
-- disagree with them (same MAC, another address; or same address, another MAC).
CREATE FUNCTION hostagent.set_reservations4(p_network text, p_agent text, p_macs macaddr[],
                                            p_ips inet[])
RETURNS TABLE (agent text, mac macaddr, ip inet)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM hostagent.reservation4 r WHERE r.network = p_network AND r.agent = p_agent;
    INSERT INTO hostagent.reservation4 (network, agent, mac, ip)
    SELECT p_network, p_agent, u.m, u.i FROM unnest(p_macs, p_ips) AS u(m, i);
    RETURN QUERY
    SELECT o.agent, o.mac, o.ip
      FROM hostagent.reservation4 o
      JOIN hostagent.reservation4 m
        ON m.network = o.network AND m.agent = p_agent
       AND ((m.mac = o.mac AND m.ip <> o.ip) OR (m.ip = o.ip AND m.mac <> o.mac))
     WHERE o.network = p_network AND o.agent <> p_agent;
END
$$;

-- The address to offer a client, held for it for p_hold seconds; NULL when nothing is free.
-- In order: its reservation (any agent's); its lease, what this agent holds for it, or what it
-- asked for, if still available to it; what another agent holds for it; the next address
-- nobody holds after p_after (the one this agent offered last; from the start of the range
-- when NULL, and again from the start when nothing is free after it); the address whose lease
-- ended longest ago. Every candidate is found through an index: the client's, the hold's, the
-- primary key, the free addresses' (walking on from p_after instead of from the lowest address
-- again, past every address just held or leased). Candidates another transaction has locked
-- are skipped (SKIP LOCKED): two agents offering at the same moment take different rows instead
-- of waiting for each other, and neither sees the other's uncommitted hold as free. An address
-- another agent holds for this client (both saw its DISCOVER) is offered as it is, without
-- locking its row: that agent's batch may be granting it right now, and taking its lock here
-- would make that batch wait for this one (and two agents doing so to each other deadlock).
CREATE FUNCTION hostagent.offer4(p_network text, p_key bytea, p_mac macaddr, p_requested inet,
                                 p_now bigint, p_first inet, p_last inet, p_server inet,
                                 p_hold bigint, p_agent text, p_after inet)
RETURNS inet
LANGUAGE plpgsql AS $$
DECLARE
    v_ip inet;
BEGIN
    SELECT r.ip INTO v_ip FROM hostagent.reservation4 r
     WHERE r.network = p_network AND r.mac = p_mac
     ORDER BY (r.agent = p_agent) DESC, r.ip
     LIMIT 1;
    IF FOUND THEN
        RETURN v_ip;
    END IF;

    -- Its own lease (expired or not), unless someone else holds it now.
    SELECT l.ip INTO v_ip FROM hostagent.lease4 l
     WHERE l.network = p_network AND l.client = p_key
       AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
       AND l.quarantine_until <= p_now
       AND (l.hold_client IS NULL OR l.hold_client = p_key OR l.hold_until <= p_now)
       AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                        WHERE r.network = p_network AND r.ip = l.ip)
     LIMIT 1
     FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        -- What this agent holds for it (a retransmitted DISCOVER).
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.hold_client = p_key AND l.hold_agent = p_agent
           AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.client IS NULL OR l.client = p_key OR l.expires <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         LIMIT 1
         FOR UPDATE SKIP LOCKED;
    END IF;
    IF NOT FOUND AND p_requested IS NOT NULL THEN
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.ip = p_requested
           AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.hold_client IS NULL OR l.hold_client = p_key OR l.hold_until <= p_now)
           AND (l.client IS NULL OR l.client = p_key OR l.expires <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         FOR UPDATE SKIP LOCKED;
    END IF;

    IF NOT FOUND THEN
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network
           AND l.hold_client = p_key AND l.hold_agent IS DISTINCT FROM p_agent
           AND l.hold_until > p_now
           AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.client IS NULL OR l.client = p_key OR l.expires <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         ORDER BY l.ip
         LIMIT 1;
        IF FOUND THEN
            RETURN v_ip;
        END IF;
    END IF;

    IF NOT FOUND AND p_after IS NOT NULL THEN
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.client IS NULL
           AND l.ip > p_after AND l.ip <= p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.hold_client IS NULL OR l.hold_until <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         ORDER BY l.ip
         LIMIT 1
         FOR UPDATE SKIP LOCKED;
    END IF;

    IF NOT FOUND THEN
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.client IS NULL
           AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.hold_client IS NULL OR l.hold_until <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         ORDER BY l.ip
         LIMIT 1
         FOR UPDATE SKIP LOCKED;
    END IF;

    IF NOT FOUND THEN
        SELECT l.ip INTO v_ip FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.client IS NOT NULL AND l.expires <= p_now
           AND l.ip BETWEEN p_first AND p_last AND l.ip <> p_server
           AND l.quarantine_until <= p_now
           AND (l.hold_client IS NULL OR l.hold_until <= p_now)
           AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                            WHERE r.network = p_network AND r.ip = l.ip)
         ORDER BY l.expires
         LIMIT 1
         FOR UPDATE SKIP LOCKED;
    END IF;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE hostagent.lease4
       SET hold_client = p_key, hold_until = p_now + p_hold, hold_agent = p_agent
     WHERE network = p_network AND ip = v_ip;
    RETURN v_ip;
END
$$;

-- Grant or renew p_ip to a client (RFC 2131 REQUEST in any state). o_outcome: 'ack' (o_hostname
-- is the lease's), 'reserved' (someone else's reservation), 'not_its_reservation' (the client
-- has one: o_reserved), 'taken', 'out_of_range'. The address's row is locked FOR UPDATE: a second
-- agent answering the same broadcast REQUEST waits for this transaction and then sees its
-- result.
CREATE FUNCTION hostagent.request4(p_network text, p_key bytea, p_mac macaddr, p_client_id bytea,
                                   p_ip inet, p_hostname text, p_now bigint, p_expires bigint,
                                   p_first inet, p_last inet, p_server inet, p_agent text,
                                   OUT o_outcome text, OUT o_hostname text, OUT o_reserved inet)
LANGUAGE plpgsql AS $$
DECLARE
    v_row hostagent.lease4%ROWTYPE;
    v_own boolean;
BEGIN
    v_own := EXISTS (SELECT 1 FROM hostagent.reservation4 r
                      WHERE r.network = p_network AND r.ip = p_ip AND r.mac = p_mac);
    IF NOT v_own THEN
        IF EXISTS (SELECT 1 FROM hostagent.reservation4 r
                    WHERE r.network = p_network AND r.ip = p_ip) THEN
            o_outcome := 'reserved';
            RETURN;
        END IF;
        SELECT r.ip INTO o_reserved FROM hostagent.reservation4 r
         WHERE r.network = p_network AND r.mac = p_mac
         ORDER BY (r.agent = p_agent) DESC, r.ip
         LIMIT 1;
        IF FOUND THEN
            o_outcome := 'not_its_reservation';
            RETURN;
        END IF;
        IF p_ip = p_server THEN
            o_outcome := 'taken';
            RETURN;
        END IF;
        IF p_ip NOT BETWEEN p_first AND p_last THEN
            o_outcome := 'out_of_range';
            RETURN;
        END IF;
    END IF;

    -- The row exists for every address of the range; only a reservation outside it may need
    -- one. (INSERT ... ON CONFLICT first would wait for any transaction that just updated
    -- the row, even one that is only holding it for an offer.)
    SELECT * INTO v_row FROM hostagent.lease4 l
     WHERE l.network = p_network AND l.ip = p_ip
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO hostagent.lease4 (network, ip) VALUES (p_network, p_ip) ON CONFLICT DO NOTHING;
        SELECT * INTO v_row FROM hostagent.lease4 l
         WHERE l.network = p_network AND l.ip = p_ip
           FOR UPDATE;
    END IF;
    IF NOT v_own AND (v_row.quarantine_until > p_now
            OR (v_row.hold_client IS NOT NULL AND v_row.hold_client <> p_key
                AND v_row.hold_until > p_now)
            OR (v_row.client IS NOT NULL AND v_row.client <> p_key
                AND v_row.expires > p_now)) THEN
        o_outcome := 'taken';
        RETURN;
    END IF;

    -- A client holds one lease: its other addresses go back. Rows another transaction has
    -- locked are left (they are reclaimed when they expire): waiting here could deadlock.
    UPDATE hostagent.lease4
       SET client = NULL, mac = NULL, client_id = NULL, hostname = NULL, expires = 0,
           agent = p_agent, updated_at = now()
     WHERE network = p_network
       AND ip IN (SELECT l.ip FROM hostagent.lease4 l
                   WHERE l.network = p_network AND l.client = p_key AND l.ip <> p_ip
                     FOR UPDATE SKIP LOCKED);

    o_hostname := COALESCE(NULLIF(p_hostname, ''),
                           CASE WHEN v_row.client = p_key THEN v_row.hostname END);
    UPDATE hostagent.lease4
       SET client = p_key, mac = p_mac, client_id = p_client_id, hostname = o_hostname,
           expires = p_expires, agent = p_agent,
           hold_client = NULL, hold_until = 0, hold_agent = NULL, quarantine_until = 0,
           updated_at = now()
     WHERE network = p_network AND ip = p_ip;
    o_outcome := 'ack';
END
$$;

-- The client gave p_ip back; whether it held it.
CREATE FUNCTION hostagent.release4(p_network text, p_key bytea, p_ip inet, p_agent text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hostagent.lease4
       SET client = NULL, mac = NULL, client_id = NULL, hostname = NULL, expires = 0,
           agent = p_agent, updated_at = now()
     WHERE network = p_network AND ip = p_ip AND client = p_key;
    RETURN FOUND;
END
$$;

-- The client found p_ip in use: quarantine it until p_until and drop the client's lease on it.
-- Honoured only from the client it was leased or offered to, and never for a reservation.
CREATE FUNCTION hostagent.decline4(p_network text, p_key bytea, p_ip inet, p_now bigint,
                                   p_until bigint, p_agent text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hostagent.lease4 l
       SET client = NULL, mac = NULL, client_id = NULL, hostname = NULL, expires = 0,
           hold_client = NULL, hold_until = 0, hold_agent = NULL,
           quarantine_until = p_until, agent = p_agent, updated_at = now()
     WHERE l.network = p_network AND l.ip = p_ip
       AND (l.client = p_key OR (l.hold_client = p_key AND l.hold_until > p_now))
       AND NOT EXISTS (SELECT 1 FROM hostagent.reservation4 r
                        WHERE r.network = p_network AND r.ip = p_ip);
    RETURN FOUND;
END
$$;

-- The client took another server's offer: drop what is held for it here but p_keep. Rows
-- locked elsewhere are skipped (their holds lapse on their own).
CREATE FUNCTION hostagent.forget_holds4(p_network text, p_key bytea, p_keep inet)
RETURNS void
LANGUAGE sql AS $$
    UPDATE hostagent.lease4
       SET hold_client = NULL, hold_until = 0, hold_agent = NULL
     WHERE network = p_network
       AND ip IN (SELECT l.ip FROM hostagent.lease4 l
                   WHERE l.network = p_network AND l.hold_client = p_key
                     AND l.ip IS DISTINCT FROM p_keep
                     FOR UPDATE SKIP LOCKED)
$$;
