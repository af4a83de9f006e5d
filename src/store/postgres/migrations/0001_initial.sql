-- Tollgate's PostgreSQL schema, version 1: the tables of the SQLite store (schema.sql at the
-- repository's root), in PostgreSQL's types. Applied once, in one transaction, under the
-- migration lock (src/store/postgres/schema.rs); a later change is a new numbered file.
--
-- Conventions as in schema.sql: timestamps are unix milliseconds UTC (BIGINT); money is integer
-- nano-USD; every figure is a BIGINT (a call's token fields are at most 10^9 each and its cost
-- at most 10^15; the rollups add with saturation at 2^63 - 1); days are 'YYYY-MM-DD' and months
-- 'YYYY-MM-01' in limits.timezone, as text, so that both stores answer the same queries.

-- One row per proxied call (the contract table), range-partitioned by month of `ts` (UTC) so
-- that history can be dropped a month at a time. The writer creates a month's partition before
-- its first row (src/store/postgres/writer.rs); `token_usage_default` is never meant to hold a
-- row and only catches one if a partition could not be made.
CREATE TABLE token_usage (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY,
    request_id          TEXT    NOT NULL,
    ts                  BIGINT  NOT NULL,            -- unix ms UTC, when the call was admitted
    user_id             TEXT    NOT NULL,            -- JWT subject
    provider            TEXT    NOT NULL,            -- [[providers]] name
    model               TEXT,                        -- NULL when the request named none
    endpoint            TEXT    NOT NULL,            -- chat.completions, generateContent, …
    streamed            BOOLEAN NOT NULL,
    status              BIGINT  NOT NULL,            -- HTTP status the client received
    input_tokens        BIGINT  NOT NULL,
    cached_input_tokens BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    total_tokens        BIGINT  NOT NULL,
    cost_nano_usd       BIGINT,                      -- NULL = the model has no price
    usage_source        TEXT    NOT NULL CHECK (usage_source IN ('reported', 'estimated', 'none', 'invalid')),
    latency_ms          BIGINT  NOT NULL,
    ttfb_ms             BIGINT,                      -- NULL when no upstream answer head arrived
    outcome             TEXT    NOT NULL,            -- complete, client_gone, upstream_error, …
    journal_id          BIGINT,                      -- the call's entry in its gateway's journal
    gateway             TEXT,                        -- the replica that recorded it (store.replica_id)
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE token_usage_default PARTITION OF token_usage DEFAULT;
CREATE INDEX token_usage_user_ts ON token_usage (user_id, ts);
CREATE INDEX token_usage_ts ON token_usage (ts);
CREATE INDEX token_usage_request_id ON token_usage (request_id);

-- Everyone who has called through Tollgate, plus the operator's settings for them. A NULL limit
-- means "use the default from gateway.toml".
CREATE TABLE users (
    id                     TEXT    PRIMARY KEY,     -- JWT subject
    email                  TEXT,
    name                   TEXT,
    blocked                BOOLEAN NOT NULL DEFAULT FALSE,
    blocked_reason         TEXT,
    daily_tokens           BIGINT,
    monthly_tokens         BIGINT,
    daily_cost_nano_usd    BIGINT,
    monthly_cost_nano_usd  BIGINT,
    requests_per_minute    BIGINT,
    max_concurrent         BIGINT,
    created_at             BIGINT  NOT NULL,        -- unix ms UTC
    last_seen_at           BIGINT                   -- unix ms UTC of the latest recorded call
);
CREATE INDEX users_last_seen ON users (last_seen_at);
CREATE INDEX users_blocked ON users (blocked) WHERE blocked;
CREATE INDEX users_created ON users (created_at);

-- The rollups, written in the same transaction as the rows they sum (see schema.sql).
CREATE TABLE usage_daily (
    day                 TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    model               TEXT    NOT NULL,            -- '' when the row's model is NULL
    endpoint            TEXT    NOT NULL,
    calls               BIGINT  NOT NULL DEFAULT 0,
    errors              BIGINT  NOT NULL DEFAULT 0,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    total_tokens        BIGINT  NOT NULL DEFAULT 0,
    cost_nano_usd       BIGINT  NOT NULL DEFAULT 0,
    estimated_calls     BIGINT  NOT NULL DEFAULT 0,
    unpriced_calls      BIGINT  NOT NULL DEFAULT 0,
    latency_ms_sum      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, provider, model, endpoint)
);
CREATE INDEX usage_daily_user_day ON usage_daily (user_id, day);

CREATE TABLE usage_user_daily (
    day                 TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    calls               BIGINT  NOT NULL DEFAULT 0,
    errors              BIGINT  NOT NULL DEFAULT 0,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    total_tokens        BIGINT  NOT NULL DEFAULT 0,
    cost_nano_usd       BIGINT  NOT NULL DEFAULT 0,
    estimated_calls     BIGINT  NOT NULL DEFAULT 0,
    unpriced_calls      BIGINT  NOT NULL DEFAULT 0,
    latency_ms_sum      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id)
);

CREATE TABLE usage_user_monthly (
    month               TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    calls               BIGINT  NOT NULL DEFAULT 0,
    errors              BIGINT  NOT NULL DEFAULT 0,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    total_tokens        BIGINT  NOT NULL DEFAULT 0,
    cost_nano_usd       BIGINT  NOT NULL DEFAULT 0,
    estimated_calls     BIGINT  NOT NULL DEFAULT 0,
    unpriced_calls      BIGINT  NOT NULL DEFAULT 0,
    latency_ms_sum      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (month, user_id)
);

CREATE TABLE usage_model_daily (
    day                 TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    calls               BIGINT  NOT NULL DEFAULT 0,
    errors              BIGINT  NOT NULL DEFAULT 0,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    total_tokens        BIGINT  NOT NULL DEFAULT 0,
    cost_nano_usd       BIGINT  NOT NULL DEFAULT 0,
    estimated_calls     BIGINT  NOT NULL DEFAULT 0,
    unpriced_calls      BIGINT  NOT NULL DEFAULT 0,
    latency_ms_sum      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, model)
);

-- Every admin action, written in the same transaction as the action itself.
CREATE TABLE admin_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts          BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT,
    before_json TEXT,
    after_json  TEXT,
    detail      TEXT
);
CREATE INDEX admin_audit_ts ON admin_audit (ts);
CREATE INDEX admin_audit_target ON admin_audit (target, ts);

CREATE TABLE admin_accounts (
    name           TEXT    PRIMARY KEY,
    password_hash  TEXT    NOT NULL,                -- argon2id PHC string
    created_at     BIGINT  NOT NULL,
    last_login_at  BIGINT
);

CREATE TABLE admin_sessions (
    token_sha256   TEXT    PRIMARY KEY,             -- hex
    admin          TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL
);
CREATE INDEX admin_sessions_admin ON admin_sessions (admin);

-- The batches each gateway has written: a batch retried after its commit's answer was lost
-- finds its id here and is not written twice. Rows older than a day are deleted by the writer.
CREATE TABLE tollgate_batches (
    gateway     TEXT    NOT NULL,
    batch_id    BIGINT  NOT NULL,
    rows        BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,                   -- unix ms UTC
    PRIMARY KEY (gateway, batch_id)
);
CREATE INDEX tollgate_batches_at ON tollgate_batches (at);

-- The gateways using this database, each renewing its row every few seconds while it runs.
-- Until limits are shared across gateways (leases, issue 13), a gateway refuses to start while
-- another one's row is fresh: two gateways would each allow a user their whole limit.
CREATE TABLE tollgate_gateways (
    replica_id  TEXT    PRIMARY KEY,
    started_at  BIGINT  NOT NULL,                   -- unix ms UTC
    seen_at     BIGINT  NOT NULL                    -- unix ms UTC, renewed while running
);

-- `tollgate import --from-sqlite`: how far the import of each SQLite history got (its first
-- call is its fingerprint), moved forward in the same transaction as each chunk it brings over.
CREATE TABLE tollgate_imports (
    fingerprint     TEXT    PRIMARY KEY,
    source          TEXT    NOT NULL,               -- the file's path, as the operator gave it
    last_call_id    BIGINT  NOT NULL,               -- the file's token_usage.id
    last_audit_id   BIGINT  NOT NULL,               -- the file's admin_audit.id
    at              BIGINT  NOT NULL                -- unix ms UTC of the last chunk
);
