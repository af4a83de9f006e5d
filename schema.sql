-- Tollgate's SQLite schema. Applied by the store at every start, so every statement must be
-- idempotent (CREATE … IF NOT EXISTS). `PRAGMA user_version` is the schema version: a change
-- bumps it and adds its migration to src/store/sqlite/schema.rs (applied once, in the same
-- transaction as this file), which refuses a file whose version is newer than it knows.
--
-- Versions: 1 — token_usage, users, usage_daily, admin tables. 2 — the writer also keeps
-- usage_user_daily, usage_user_monthly and usage_model_daily (filled from usage_daily when an
-- older file is migrated). 3 — usage_source may be 'invalid'; rows and rollups an older
-- Tollgate left with impossible figures are repaired once (src/store/sqlite/repair.rs). 4 —
-- token_usage.journal_id: the call journal moved to a file of its own (src/store/journal.rs);
-- call_journal is only read once, for the entries an older Tollgate left in it. 5 — users.plan:
-- the plan of the user's latest call (added to older files, with its index, by schema.rs).
--
-- Conventions: timestamps are unix milliseconds UTC; money is integer nano-USD (1e-9 USD);
-- token counts follow one convention for every provider: input includes cached input, output
-- includes reasoning, total = input + output. Every figure is an INTEGER: a call's token
-- fields are at most 10^9 each and its cost at most 10^15 (src/usage.rs), and the rollups add
-- with saturation at 2^63 - 1, so no sum ever turns into a REAL.

-- One row per proxied call (the contract table).
CREATE TABLE IF NOT EXISTS token_usage (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT    NOT NULL,
    ts                  INTEGER NOT NULL,            -- unix ms UTC, when the call was admitted
    user_id             TEXT    NOT NULL,            -- JWT subject
    provider            TEXT    NOT NULL,            -- [[providers]] name
    model               TEXT,                        -- NULL when the request named none
    endpoint            TEXT    NOT NULL,            -- chat.completions, generateContent, …
    streamed            INTEGER NOT NULL,            -- 0 / 1
    status              INTEGER NOT NULL,            -- HTTP status the client received
    input_tokens        INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    total_tokens        INTEGER NOT NULL,
    cost_nano_usd       INTEGER,                     -- NULL = the model has no price (or, for a
                                                     -- row repaired at migration, the cost is unknown)
    -- reported, estimated, none; invalid = the provider's report was impossible, the tokens are
    -- the estimate. The CHECK's text is matched by the migration to version 3 (schema.rs).
    usage_source        TEXT    NOT NULL CHECK (usage_source IN ('reported', 'estimated', 'none', 'invalid')),
    latency_ms          INTEGER NOT NULL,
    ttfb_ms             INTEGER,                     -- NULL when no upstream answer head arrived
    outcome             TEXT    NOT NULL,            -- complete, client_gone, upstream_error, …
    journal_id          INTEGER                      -- the call's entry in the call journal
                                                     -- (NULL for a call never forwarded or
                                                     -- with store.journal = "off"); a start
                                                     -- matches leftover entries against it
);
CREATE INDEX IF NOT EXISTS token_usage_user_ts ON token_usage (user_id, ts);
CREATE INDEX IF NOT EXISTS token_usage_ts ON token_usage (ts);
CREATE INDEX IF NOT EXISTS token_usage_request_id ON token_usage (request_id);

-- Where schema versions 1-3 kept the call journal (one entry per call about to be forwarded,
-- deleted with its row). Version 4 keeps it in files beside the database (`<path>-calls/`); an
-- entry still here at start belongs to a call an older Tollgate did not see end: it is recorded
-- once as outcome 'recovered', its reservation as the estimate, and the table emptied.
CREATE TABLE IF NOT EXISTS call_journal (
    id                  INTEGER PRIMARY KEY,         -- the row's journal_id (per process run)
    request_id          TEXT    NOT NULL,
    ts                  INTEGER NOT NULL,            -- unix ms UTC, when the call was admitted
    user_id             TEXT    NOT NULL,
    user_email          TEXT,
    user_name           TEXT,
    provider            TEXT    NOT NULL,
    model               TEXT,
    endpoint            TEXT    NOT NULL,
    streamed            INTEGER NOT NULL,
    hold_input_tokens   INTEGER NOT NULL,            -- the reservation: prompt estimate
    hold_output_tokens  INTEGER NOT NULL,            -- and output cap
    hold_cost_nano_usd  INTEGER                      -- NULL = the model has no price
);

-- Everyone who has called through Tollgate, plus the operator's settings for them. The writer
-- creates a user on first sight and moves last_seen_at; the admin API owns the other columns.
-- A NULL limit means "use the default from gateway.toml".
CREATE TABLE IF NOT EXISTS users (
    id                     TEXT    PRIMARY KEY,     -- JWT subject
    email                  TEXT,                    -- from the first token that carried one
    name                   TEXT,
    blocked                INTEGER NOT NULL DEFAULT 0,
    blocked_reason         TEXT,
    daily_tokens           INTEGER,
    monthly_tokens         INTEGER,
    daily_cost_nano_usd    INTEGER,
    monthly_cost_nano_usd  INTEGER,
    requests_per_minute    INTEGER,
    max_concurrent         INTEGER,
    created_at             INTEGER NOT NULL,        -- unix ms UTC
    last_seen_at           INTEGER,                 -- unix ms UTC of the latest recorded call
    plan                   TEXT                     -- [plans.NAME] of the latest call; NULL: none
);

-- Daily rollups of token_usage, written in the same transaction as the rows they sum, so that
-- they always equal SUM(...) over token_usage grouped the same way. `day` is the calendar day
-- ('YYYY-MM-DD') of the row's ts in limits.timezone; `model` is '' when the row's model is NULL
-- (a primary key column must not be NULL for the upsert to find it).
CREATE TABLE IF NOT EXISTS usage_daily (
    day                 TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    endpoint            TEXT    NOT NULL,
    calls               INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,  -- status >= 400
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    total_tokens        INTEGER NOT NULL DEFAULT 0,
    cost_nano_usd       INTEGER NOT NULL DEFAULT 0,  -- priced calls only
    estimated_calls     INTEGER NOT NULL DEFAULT 0,  -- usage_source IN ('estimated', 'invalid')
    unpriced_calls      INTEGER NOT NULL DEFAULT 0,  -- cost_nano_usd IS NULL
    latency_ms_sum      INTEGER NOT NULL DEFAULT 0,  -- for mean latency: latency_ms_sum / calls
    PRIMARY KEY (day, user_id, provider, model, endpoint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_daily_user_day ON usage_daily (user_id, day);

-- Coarser rollups the writer keeps in the same transaction, so that no admin read sums more than
-- a few thousand rows: per user per day and per user per month (ranking users), per model per
-- day (the system's figures and charts). Same sums as usage_daily; `month` is 'YYYY-MM-01'.
CREATE TABLE IF NOT EXISTS usage_user_daily (
    day                 TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    calls               INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    total_tokens        INTEGER NOT NULL DEFAULT 0,
    cost_nano_usd       INTEGER NOT NULL DEFAULT 0,
    estimated_calls     INTEGER NOT NULL DEFAULT 0,
    unpriced_calls      INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS usage_user_monthly (
    month               TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    calls               INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    total_tokens        INTEGER NOT NULL DEFAULT 0,
    cost_nano_usd       INTEGER NOT NULL DEFAULT 0,
    estimated_calls     INTEGER NOT NULL DEFAULT 0,
    unpriced_calls      INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (month, user_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS usage_model_daily (
    day                 TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    model               TEXT    NOT NULL,            -- '' when the request named none
    calls               INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    total_tokens        INTEGER NOT NULL DEFAULT 0,
    cost_nano_usd       INTEGER NOT NULL DEFAULT 0,
    estimated_calls     INTEGER NOT NULL DEFAULT 0,
    unpriced_calls      INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, model)
) WITHOUT ROWID;

-- Every admin action, written in the same transaction as the action itself.
CREATE TABLE IF NOT EXISTS admin_audit (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,                    -- unix ms UTC
    actor       TEXT    NOT NULL,                    -- admin account or JWT subject
    action      TEXT    NOT NULL,                    -- block, unblock, set_limits, login, …
    target      TEXT,                                -- usually a user id
    before_json TEXT,
    after_json  TEXT,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS admin_audit_ts ON admin_audit (ts);
CREATE INDEX IF NOT EXISTS admin_audit_target ON admin_audit (target, ts);

-- Admin accounts for the dashboard and API (`tollgate admin add NAME`). Passwords are argon2id
-- PHC strings; the plain password is never stored.
CREATE TABLE IF NOT EXISTS admin_accounts (
    name           TEXT    PRIMARY KEY,
    password_hash  TEXT    NOT NULL,                -- argon2id PHC string
    created_at     INTEGER NOT NULL,                -- unix ms UTC
    last_login_at  INTEGER
);

-- Signed-in admin sessions. Only a SHA-256 of the cookie's token is kept, so a copy of the
-- file does not hand out sessions. Expired rows are deleted on sign-in.
CREATE TABLE IF NOT EXISTS admin_sessions (
    token_sha256   TEXT    PRIMARY KEY,             -- hex
    admin          TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL                 -- unix ms UTC
);
CREATE INDEX IF NOT EXISTS admin_sessions_admin ON admin_sessions (admin);

CREATE INDEX IF NOT EXISTS users_last_seen ON users (last_seen_at);

-- For the admin API's reads (src/store/sqlite/reads/): count blocked users without reading every
-- user, and page through users by creation time. Both change only when a user is created or
-- blocked, never on the writer's per-batch `last_seen_at` update.
CREATE INDEX IF NOT EXISTS users_blocked ON users (blocked) WHERE blocked != 0;
CREATE INDEX IF NOT EXISTS users_created ON users (created_at);

-- Alerts the [[alerts]] rules fired (src/alerts/). The unique key is what makes a rule fire
-- once per subject and window: a second insert of the same key is ignored, also after a
-- restart. `delivery` is 'none' (no webhook), 'pending', 'delivered' or 'failed'.
CREATE TABLE IF NOT EXISTS alerts (
    id           INTEGER PRIMARY KEY,
    ts           INTEGER NOT NULL,                  -- unix ms UTC, when it fired
    rule         TEXT    NOT NULL,                  -- [[alerts]] name
    kind         TEXT    NOT NULL,                  -- user_limit, spend, upstream_errors, …
    subject      TEXT    NOT NULL,                  -- a user id, or the gateway
    period       TEXT    NOT NULL,                  -- the day, the month, or an episode's start
    level        TEXT    NOT NULL,                  -- the threshold passed, e.g. 'day tokens 80%'
    message      TEXT    NOT NULL,
    details      TEXT    NOT NULL,                  -- JSON
    delivery     TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,                           -- unix ms UTC
    UNIQUE (rule, subject, period, level)
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);

PRAGMA user_version = 5;
