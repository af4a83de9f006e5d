#!/usr/bin/env python3
"""Print the Tollgate config of a benchmark run: the shipped gateway.toml, changed only where
the harness must.

Changed, and nothing else:
  - addresses: server.listen, admin.listen; store.path (a fresh file in the run's directory);
  - upstreams: every [[providers]] upstream points at the harness's mock;
  - limits raised out of the way: limits.daily_tokens, monthly_tokens, requests_per_minute, and
    server.max_in_flight_per_user (every load generator uses one JWT standing for many users);
  - prices: the harness's models the shipped [pricing] does not price are added (PRICES=0: none);
  - store.journal when JOURNAL is set (to measure the journal's modes);
  - store.backend = "postgres" when BACKEND=postgres (the URL is the caller's DATABASE_URL).

VARIANT=tuned additionally sets what the shipped file leaves to the operator and a benchmark on
one pinned core favours: log.level = "warn" and server.worker_threads = 1. It is reported beside
the shipped variant, never instead of it.

Environment: UPSTREAM, LISTEN, ADMIN, DB (required); JOURNAL, BACKEND, VARIANT (shipped|tuned), PRICES,
GATEWAY_TOML (default: the repository's gateway.toml).
"""
import os
import re
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.environ.get("GATEWAY_TOML") or os.path.join(HERE, "..", "..", "gateway.toml")

# The mock's models and their prices, added when the shipped file does not price them.
HARNESS_PRICES = {
    "gpt-4o-mini": "input = 0.15\ncached_input = 0.075\noutput = 0.60\n",
    "gemini-2.0-flash": "input = 0.10\ncached_input = 0.025\noutput = 0.40\n",
    "mock": "input = 0.10\noutput = 0.40\n",
}


def toml_str(v):
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    env = os.environ
    try:
        upstream, listen, admin, db = env["UPSTREAM"], env["LISTEN"], env["ADMIN"], env["DB"]
    except KeyError as e:
        sys.exit(f"gateway_config.py: {e.args[0]} is not set")
    variant = env.get("VARIANT", "shipped")
    if variant not in ("shipped", "tuned"):
        sys.exit(f"gateway_config.py: VARIANT must be shipped or tuned, not {variant!r}")
    # (table, key) -> new value (TOML text). "providers" applies to every [[providers]] table.
    changes = {
        ("server", "listen"): toml_str(listen),
        ("server", "max_in_flight_per_user"): "1000000",
        ("admin", "listen"): toml_str(admin),
        ("store", "path"): toml_str(db),
        ("limits", "daily_tokens"): "1000000000000000",
        ("limits", "monthly_tokens"): "1000000000000000",
        ("limits", "requests_per_minute"): "1000000000",
        ("providers", "upstream"): toml_str(upstream),
    }
    if env.get("JOURNAL"):
        changes[("store", "journal")] = toml_str(env["JOURNAL"])
    backend = env.get("BACKEND", "sqlite")
    if backend not in ("sqlite", "postgres"):
        sys.exit(f"gateway_config.py: BACKEND must be sqlite or postgres, not {backend!r}")
    if backend == "postgres":
        changes[("store", "backend")] = toml_str("postgres")
    if variant == "tuned":
        changes[("log", "level")] = toml_str("warn")
        changes[("server", "worker_threads")] = "1"

    with open(SHIPPED, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, table, done = [], None, set()
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^(\s*)([A-Za-z0-9_]+)(\s*=\s*)(.*)$")

    def close_table():
        # Keys the shipped table does not set: appended at its end.
        if table is None:
            return
        missing = [(k, v) for (t, k), v in changes.items()
                   if t == table and (t, k) not in done and t != "providers"]
        for k, v in missing:
            out.append(f"{k} = {v}  # benchmark harness")
            done.add((table, k))

    for line in lines:
        m = header.match(line)
        if m and not line.lstrip().startswith("#"):
            close_table()
            table = m.group(1).split(".")[0].strip('"')
            out.append(line)
            continue
        m = assign.match(line)
        if m and table is not None and (table, m.group(2)) in changes:
            out.append(f"{m.group(1)}{m.group(2)}{m.group(3)}{changes[(table, m.group(2))]}  # benchmark harness")
            done.add((table, m.group(2)))
            continue
        out.append(line)
    close_table()
    missing = sorted(f"[{t}] {k}" for (t, k) in changes if (t, k) not in done)
    if missing:
        sys.exit(f"gateway_config.py: the shipped file has no table for {', '.join(missing)}")
    text = "# Written by benches/load/gateway_config.py from the shipped gateway.toml " \
           f"(variant {variant}).\n" + "\n".join(out) + "\n"
    if env.get("PRICES", "1") != "0":
        priced = tomllib.loads(text).get("pricing", {})
        for model, table in HARNESS_PRICES.items():
            if model not in priced:
                text += f"\n# Added by the benchmark harness.\n[pricing.{toml_str(model)}]\n{table}"
    # The result must parse and say what we meant.
    cfg = tomllib.loads(text)
    assert cfg["server"]["listen"] == listen and cfg["store"]["path"] == db
    assert all(p["upstream"] == upstream for p in cfg["providers"])
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
