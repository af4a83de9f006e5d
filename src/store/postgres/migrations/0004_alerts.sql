-- Version 4: alerts the [[alerts]] rules fired (src/alerts/). The unique key makes a rule fire
-- once per subject and window, whichever gateway sees it first: the others' inserts are
-- ignored (ON CONFLICT DO NOTHING) and only the gateway whose insert went in delivers it.
CREATE TABLE alerts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts           BIGINT  NOT NULL,                  -- unix ms UTC, when it fired
    rule         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    level        TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    details      TEXT    NOT NULL,                  -- JSON
    delivery     TEXT    NOT NULL,                  -- none, pending, delivered, failed
    attempts     BIGINT  NOT NULL DEFAULT 0,
    delivered_at BIGINT,
    UNIQUE (rule, subject, period, level)
);
CREATE INDEX alerts_ts ON alerts (ts);
