-- Version 3: limits shared by every gateway on this database (src/store/postgres/lease.rs).
--
-- Each gateway spends its users' daily and monthly budgets out of leases: a slice of a budget
-- granted to it here, atomically, by tollgate_lease(), and spent in its own memory. A lease
-- counts for the other gateways only while its gateway renews its row in tollgate_gateways
-- (lease_until, the database's clock): a gateway that dies frees its leases when that passes.

-- When this gateway's leases stop counting (unix ms, the database's clock), pushed forward by
-- every heartbeat; and which process holds the name (a second process under the same
-- replica_id is noticed by the first one's next heartbeat).
ALTER TABLE tollgate_gateways ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tollgate_gateways ADD COLUMN instance TEXT NOT NULL DEFAULT '';

-- What each gateway may still spend of a user's day or month beyond the rows already written:
-- raised by a grant, lowered by what the gateway gives back and by the usage of each row its
-- writer commits (in the same transaction as the rollups), never below 0.
CREATE TABLE tollgate_leases (
    user_id  TEXT    NOT NULL,
    span     TEXT    NOT NULL CHECK (span IN ('day', 'month')),
    period   TEXT    NOT NULL,          -- the day, or the month's first day (limits.timezone)
    gateway  TEXT    NOT NULL,          -- tollgate_gateways.replica_id
    tokens   BIGINT  NOT NULL DEFAULT 0,
    cost     BIGINT  NOT NULL DEFAULT 0, -- nano-USD
    PRIMARY KEY (user_id, span, period, gateway)
);
CREATE INDEX tollgate_leases_gateway ON tollgate_leases (gateway);

-- One row per user who was ever leased a budget: the lock every grant for that user takes, so
-- that two gateways asking at once are answered one after the other.
CREATE TABLE tollgate_budgets (
    user_id  TEXT  PRIMARY KEY
);

-- Grant `p_gateway` what a call of `p_user` holding `p_hold` needs, and some more. The four
-- array slots are: day tokens, day cost, month tokens, month cost. `p_back` is what the gateway
-- gives back first (its lease's unspent part), `p_limit` the limits in force (NULL: none),
-- `p_want` how much beyond the hold it would like. With room = limit - used - every live lease
-- (this gateway's own after what it gives back), the verdicts are one gateway's rule:
--   'fit'     every budget has room for the hold: the hold is granted in each, plus up to half
--             of the room left beyond it (at most p_want);
--   'last'    every budget has some room but not all of it for the hold: the hold is granted
--             all the same, so that used + leases passes the limit and every gateway's next ask
--             is refused until this call's row shows what it used — the one call past the limit;
--   'refused' `refused` is the slot (1-4) at fault, checked month before day, tokens before cost.
-- So used + leases stays below limit + one hold: a burst over all gateways together goes past a
-- limit by at most one call, within its hold.
-- `used` is what the written rows count, `elsewhere` what other leases and this gateway's own
-- calls in flight hold.
CREATE FUNCTION tollgate_lease(
    p_user TEXT, p_gateway TEXT, p_day TEXT, p_month TEXT,
    p_hold BIGINT[], p_back BIGINT[], p_limit BIGINT[], p_want BIGINT[]
) RETURNS TABLE (verdict TEXT, refused INT, granted BIGINT[], used BIGINT[], elsewhere BIGINT[])
LANGUAGE plpgsql AS $$
DECLARE
    now_ms   BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    own      BIGINT[];
    others   BIGINT[];
    u        BIGINT[];
    in_use   BIGINT[] := ARRAY[0, 0, 0, 0];
    room     BIGINT[] := ARRAY[0, 0, 0, 0];
    g        BIGINT[] := ARRAY[0, 0, 0, 0];
    fits     BOOLEAN := TRUE;
    has_room BOOLEAN := TRUE;
    slot     INT;
    i        INT;
BEGIN
    INSERT INTO tollgate_budgets (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM tollgate_budgets b WHERE b.user_id = p_user FOR UPDATE;

    -- One statement, one snapshot: the rollups and the leases a writer's commit changes together.
    SELECT ARRAY[COALESCE(d.total_tokens, 0), COALESCE(d.cost_nano_usd, 0),
                 COALESCE(m.total_tokens, 0), COALESCE(m.cost_nano_usd, 0)],
           l.own, l.others
      INTO u, own, others
      FROM (SELECT 1) AS one
      LEFT JOIN usage_user_daily d ON d.day = p_day AND d.user_id = p_user
      LEFT JOIN usage_user_monthly m ON m.month = p_month AND m.user_id = p_user
      CROSS JOIN LATERAL (
        SELECT ARRAY[
                 COALESCE(SUM(x.tokens) FILTER (WHERE x.span = 'day' AND x.gateway = p_gateway), 0),
                 COALESCE(SUM(x.cost) FILTER (WHERE x.span = 'day' AND x.gateway = p_gateway), 0),
                 COALESCE(SUM(x.tokens) FILTER (WHERE x.span = 'month' AND x.gateway = p_gateway), 0),
                 COALESCE(SUM(x.cost) FILTER (WHERE x.span = 'month' AND x.gateway = p_gateway), 0)
               ]::BIGINT[] AS own,
               ARRAY[
                 COALESCE(SUM(x.tokens) FILTER (WHERE x.span = 'day' AND x.gateway <> p_gateway AND x.alive), 0),
                 COALESCE(SUM(x.cost) FILTER (WHERE x.span = 'day' AND x.gateway <> p_gateway AND x.alive), 0),
                 COALESCE(SUM(x.tokens) FILTER (WHERE x.span = 'month' AND x.gateway <> p_gateway AND x.alive), 0),
                 COALESCE(SUM(x.cost) FILTER (WHERE x.span = 'month' AND x.gateway <> p_gateway AND x.alive), 0)
               ]::BIGINT[] AS others
          FROM (SELECT le.span, le.gateway, le.tokens, le.cost,
                       COALESCE(gw.lease_until > now_ms, FALSE) AS alive
                  FROM tollgate_leases le
                  LEFT JOIN tollgate_gateways gw ON gw.replica_id = le.gateway
                 WHERE le.user_id = p_user
                   AND ((le.span = 'day' AND le.period = p_day)
                     OR (le.span = 'month' AND le.period = p_month))) AS x
      ) AS l;

    FOR i IN 1..4 LOOP
        in_use[i] := GREATEST(own[i] - GREATEST(p_back[i], 0), 0);
        CONTINUE WHEN p_limit[i] IS NULL;
        room[i] := p_limit[i] - u[i] - others[i] - in_use[i];
        IF room[i] <= 0 THEN
            has_room := FALSE;
            fits := FALSE;
        ELSIF room[i] < p_hold[i] THEN
            fits := FALSE;
        END IF;
    END LOOP;

    IF fits THEN
        verdict := 'fit';
        FOR i IN 1..4 LOOP
            CONTINUE WHEN p_limit[i] IS NULL;
            g[i] := p_hold[i] + LEAST(GREATEST(p_want[i], 0), (room[i] - p_hold[i]) / 2);
        END LOOP;
    ELSIF has_room THEN
        verdict := 'last';
        FOR i IN 1..4 LOOP
            CONTINUE WHEN p_limit[i] IS NULL;
            g[i] := p_hold[i];
        END LOOP;
    ELSE
        verdict := 'refused';
        FOREACH slot IN ARRAY ARRAY[3, 4, 1, 2] LOOP
            IF p_limit[slot] IS NOT NULL AND room[slot] <= 0 THEN
                refused := slot;
                EXIT;
            END IF;
        END LOOP;
    END IF;

    -- Relative to the row as it is now: a writer's commit since the snapshot is kept.
    INSERT INTO tollgate_leases AS le (user_id, span, period, gateway, tokens, cost)
    VALUES (p_user, 'day', p_day, p_gateway, g[1], g[2]),
           (p_user, 'month', p_month, p_gateway, g[3], g[4])
    ON CONFLICT (user_id, span, period, gateway) DO UPDATE SET
        tokens = GREATEST(le.tokens - GREATEST(CASE WHEN le.span = 'day' THEN p_back[1] ELSE p_back[3] END, 0), 0)
                 + EXCLUDED.tokens,
        cost = GREATEST(le.cost - GREATEST(CASE WHEN le.span = 'day' THEN p_back[2] ELSE p_back[4] END, 0), 0)
               + EXCLUDED.cost;

    granted := g;
    used := u;
    elsewhere := ARRAY[others[1] + in_use[1], others[2] + in_use[2],
                       others[3] + in_use[3], others[4] + in_use[4]];
    RETURN NEXT;
END;
$$;
