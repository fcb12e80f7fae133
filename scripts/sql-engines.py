#!/usr/bin/env python3
"""pfsync's SQL and tables on the engines analysts and auditors run, compared value by value with pfsync.

Usage: scripts/sql-engines.py --pfsync target/debug/pfsync [--work DIR] [--live-bed DIR]

1. Warehouses written by the pfsync binary: `pfsync demo` (every source table, payouts, escrow bounties,
   rules, rejects); runs against `pfsync sandbox --admin` (steps in purpleflea.ops.runs, discrepancies
   planted at the provider so reconcile records open and resolved findings); and with --live-bed, runs of
   `[provider] kind = "live"` against a test bed of Purple Flea's own services (ledger entries, a gap,
   escrow terms). Each real warehouse starts with `pfsync init`, as a user's does; after the demo, `pfsync
   init` creates whatever it left missing, as a Unity Catalog admin would.
2. Spark SQL (pyspark, local): every table is read with the `deltalake` package, staged as Parquet and
   created as `purpleflea_<schema>.<table>`: `purpleflea.<schema>.<table>` with the catalog folded into the
   database name, the one rewrite of the text Spark runs (open-source Spark has no catalog that holds Delta
   tables under a name of one's choosing without extra jars; placeholders are filled in alike for both). Each file in sql/ddl/ is created with USING
   PARQUET in place of USING DELTA in scratch databases (`ddl_purpleflea_<schema>`), and its columns must
   be the data's; the views of sql/views/ are created as they are; then every query in sql/ (views,
   analyst, auditor, reconcile, examples) runs on Spark and through `pfsync sql --format arrow`, and the
   two results must hold the same rows (sorted; decimals as exact text, timestamps to the nanosecond).
3. DuckDB's Delta extension (delta-kernel-rs, from the duckdb-ext-delta package, loaded from the package's
   folder: no network) reads every table with `delta_scan`; its rows must be those `deltalake` reads, as
   written, after `pfsync maintain --i-know --retention-hours 0` (compacted, checkpointed, vacuumed), and
   once the commits the checkpoint covers are deleted, as log cleanup does when they expire (a reader
   must then start from the checkpoint). pfsync's own row counts are checked in each state too.

Exits 1 on any difference or failure; files that need Databricks (time travel, DESCRIBE HISTORY, Unity
Catalog grants) are listed as skipped with the reason.
"""

import argparse
import collections
import concurrent.futures
import datetime
import decimal
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import deltalake
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parent.parent
SQL = REPO / "sql"

# Files that need Databricks itself, by what they use.
DATABRICKS_ONLY = {
    "grants.sql": "Unity Catalog grants (no catalog securables or principals in Spark or pfsync)",
    "auditor/log_as_of_version.databricks.sql": "time travel (VERSION AS OF) on a Delta table",
    "auditor/run_trail_history.databricks.sql": "DESCRIBE HISTORY of a Delta table",
}

# Columns whose value is the engine's clock when the query runs: each must be a time within the check.
CLOCK_COLUMNS = {"views/purpleflea.agents.wallet_freshness.sql": {"checked_at"}}

# The sandbox's built-in test key (the sandbox refuses it off loopback).
SANDBOX_KEY = "pf_test_sandbox"

# Two labeling tasks with their labels, and one not done yet: the example's own input tables.
LABELING_INPUT = """WITH label_tasks AS (
  SELECT * FROM (VALUES
    ('t-1', 'agent-000002', CAST('12.50' AS DECIMAL(18,2)), 'true'),
    ('t-2', 'agent-000003', CAST('8.00' AS DECIMAL(18,2)), 'true'),
    ('t-3', 'agent-000004', CAST('5.25' AS DECIMAL(18,2)), 'false')
  ) AS v(task_id, labeler_agent_id, reward_usd, labels_done)
),
label_submissions AS (
  SELECT * FROM (VALUES
    ('t-1', 'l-1', CAST(0.91 AS DOUBLE)), ('t-1', 'l-2', CAST(0.97 AS DOUBLE)), ('t-1', 'l-3', CAST(0.86 AS DOUBLE)),
    ('t-2', 'l-4', CAST(0.40 AS DOUBLE)), ('t-2', 'l-5', CAST(0.95 AS DOUBLE)), ('t-2', 'l-6', CAST(0.70 AS DOUBLE)),
    ('t-3', 'l-7', CAST(0.99 AS DOUBLE))
  ) AS v(task_id, label_id, confidence)
)
"""

failures = []
# Rows each query file returned, over all warehouses: a file that never returns any is compared in name only.
rows_seen = {}


def fail(what):
    failures.append(what)
    print(f"FAIL {what}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The warehouses, written by the pfsync binary


class Pfsync:
    """The binary, with none of the caller's pfsync settings (a stray PFSYNC_CONFIG would change the run)."""

    def __init__(self, binary):
        self.binary = str(pathlib.Path(binary).resolve())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PFSYNC_")}
        self.env.pop("PURPLEFLEA_API_KEY", None)
        self.env.pop("RUST_LOG", None)

    def run(self, warehouse, *args, ok=(0,), key=None, env=None):
        env = dict(self.env, **(env or {}), **({"PURPLEFLEA_API_KEY": key} if key else {}))
        cmd = [self.binary, "--warehouse", str(warehouse), "-q", *args]
        p = subprocess.run(cmd, env=env, capture_output=True)
        if p.returncode not in ok:
            raise RuntimeError(
                f"pfsync {' '.join(args)[:200]} exited {p.returncode}:\n{p.stdout.decode()[-3000:]}"
                f"{p.stderr.decode()[-3000:]}"
            )
        return p

    def query(self, warehouse, sql):
        """The result of `pfsync sql --format arrow` as an Arrow table, every value with its type."""
        p = self.run(warehouse, "sql", "--format", "arrow", "--", sql)
        return pyarrow.ipc.open_stream(io.BytesIO(p.stdout)).read_all()


class Warehouse:
    def __init__(self, name, path, namespace, run_id):
        self.name, self.path, self.namespace, self.run_id = name, path, namespace, run_id

    def tables(self):
        """`schema.table` -> folder, for every Delta table under the warehouse's catalog folder."""
        root = self.path / "purpleflea"
        return {
            f"{d.parent.name}.{d.name}": d
            for d in sorted(root.glob("*/*"))
            if (d / "_delta_log").is_dir()
        }


def make_demo_warehouse(pf, work):
    wh = Warehouse("demo", work / "demo", "demo", "ci-demo")
    pf.run(wh.path, "--run-id", wh.run_id, "demo", "--agents", "200")
    pf.run(wh.path, "init")
    return wh


class Sandbox:
    """`pfsync sandbox --admin` on a free loopback port, for as long as the `with` block."""

    def __init__(self, pf):
        self.proc = subprocess.Popen(
            [pf.binary, "sandbox", "--admin", "--port", "0", "--agents", "40", "--seed", "7"],
            env=pf.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().decode()
        m = re.search(r"http://127\.0\.0\.1:\d+/api", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"pfsync sandbox did not print its URL: {line!r}")
        self.url = m.group(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()

    def call(self, method, path, body=None):
        return http(method, f"{self.url}{path}", SANDBOX_KEY, body)

    def plant_tx(self, agent, amount, reference, key=None):
        body = {"kind": "payout", "agent_id": agent, "amount_usd": amount, "reference": reference}
        if key:
            body["idempotency_key"] = key
        self.call("POST", "/admin/transactions", body)

    def set_balance(self, agent, balance):
        self.call("POST", f"/admin/wallets/{agent}/balance", {"balance_usd": balance})


PAYOUTS_SQL = """SELECT * FROM (VALUES
  ('ci-p-1', 'agent-000001', CAST('12.50' AS DECIMAL(18,2)), 'ci bonus'),
  ('ci-p-2', 'agent-000002', CAST('7.05' AS DECIMAL(18,2)), 'ci bonus'),
  ('ci-p-3', 'agent-000003', CAST('0.01' AS DECIMAL(18,2)), 'ci rounding'),
  ('ci-p-4', 'agent-000001', CAST('120.00' AS DECIMAL(18,2)), 'ci prize'),
  ('ci-p-5', 'agent-999999', CAST('1.00' AS DECIMAL(18,2)), 'ci unknown agent')
) AS p(payout_id, agent_id, amount_usd, reason)"""

ACTIONS_SQL = """SELECT 'ci-e-1' AS action_id, 'create' AS action, CAST(NULL AS STRING) AS escrow_id,
       CAST(NULL AS STRING) AS create_action_id, 'agent-000010' AS buyer_agent_id,
       'agent-000011' AS seller_agent_id, '7.25' AS amount_usd, 'ci task' AS description,
       CAST(NULL AS STRING) AS metadata, 'ci escrow' AS reason
UNION ALL
SELECT 'ci-e-2', 'create', NULL, NULL, 'agent-000012', 'agent-000013', '3.10', 'ci task', NULL, 'ci escrow'
UNION ALL
SELECT 'ci-e-1-release', 'release', NULL, 'ci-e-1', NULL, NULL, NULL, NULL, NULL, 'ci passed'
UNION ALL
SELECT 'ci-e-2-dispute', 'dispute', NULL, 'ci-e-2', NULL, NULL, NULL, NULL, NULL, 'ci failed'"""


def make_runs_warehouse(pf, work):
    """Three `pfsync run`s against a sandbox with planted discrepancies: every finding query has rows."""
    wh = Warehouse("runs", work / "runs", "ci", "ci-run-1")
    pf.run(wh.path, "init")
    with Sandbox(pf) as sb:
        urls = ["--api-url", sb.url, "--faucet-url", sb.url]

        def run(run_id, *args):
            # 5: rows refused (the unknown agent); 8: findings open. Both are this warehouse's point.
            pf.run(wh.path, *urls, "--run-id", run_id, "run", "--namespace", wh.namespace, *args, ok=(0, 5, 8),
                   key=SANDBOX_KEY)

        # Before the first run: a transaction with one of our keys that no run logged, and a balance with
        # no transaction behind it.
        sb.plant_tx("agent-000005", "3.00", "ghost", key=f"pfsync:{wh.namespace}:payout:ghost-1")
        original = sb.call("GET", "/wallet/agent-000006")["balance_usd"]
        sb.set_balance("agent-000006", str(decimal.Decimal(str(original)) + 1))
        run("ci-run-1", "--payouts-sql", PAYOUTS_SQL, "--actions-sql", ACTIONS_SQL)
        # A keyless payout equal to a logged one (paid twice by another path), and a second transaction
        # under a logged operation's key.
        sb.plant_tx("agent-000001", "12.50", "ci bonus")
        sb.plant_tx("agent-000002", "7.05", "ci bonus", key=f"pfsync:{wh.namespace}:payout:ci-p-2")
        run("ci-run-2", "--steps", "sync,reconcile")
        # The balance put right: the third run records that finding as resolved and carries the others.
        sb.set_balance("agent-000006", str(original))
        run("ci-run-3", "--steps", "sync,reconcile")
    return wh


def http(method, url, key, body=None):
    req = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def make_live_warehouse(pf, work, bed, scripts):
    """`[provider] kind = "live"` against Purple Flea's own services on a running test bed: wallets of held
    keys, their ledgers (DECIMAL(18,6)), an escrow's exact terms, payouts, and a ledger gap (more entries
    between two syncs than the ledger window lists), so the live queries have rows to compare."""
    wh = Warehouse("live", work / "live", "ci", "ci-live-1")
    casino = (bed / "casino.url").read_text().strip()
    escrow = (bed / "escrow.url").read_text().strip()
    made = subprocess.run([sys.executable, scripts / "agents.py", bed, "3"], capture_output=True, check=True)
    (payer, payer_key), (held, held_key), (other, _) = (
        (a["agent_id"], a["api_key"]) for a in map(json.loads, made.stdout.decode().splitlines())
    )
    subprocess.run([sys.executable, scripts / "fund.py", bed, payer, "100"], capture_output=True, check=True)
    config = work / "live.toml"
    config.write_text(
        f'warehouse = {json.dumps(str(wh.path))}\n\n[provider]\nkind = "live"\n'
        f"casino_url = {json.dumps(casino)}\nescrow_url = {json.dumps(escrow)}\n\n"
        '[[provider.agent_keys]]\nenv = "SQL_ENGINES_HELD_KEY"\n'
    )
    pf.run(wh.path, "init")

    def pay(key, to, amount):
        http("POST", f"{casino}/stats/pay", key, {"to_agent_id": to, "amount": amount})

    def run(run_id, *args):
        # 6: an outcome left unknown (the services share one SQLite file, which refuses writes when busy).
        pf.run(wh.path, "--config", config, "--run-id", run_id, "--timeout-secs", "2", "--max-elapsed-secs", "2",
               *args, ok=(0, 5, 6, 8), key=payer_key, env={"SQL_ENGINES_HELD_KEY": held_key})

    pay(payer_key, held, 1.0)
    pay(payer_key, other, 2.0)
    pay(held_key, payer, 0.25)
    payouts = (f"SELECT * FROM (VALUES ('lv-1', '{held}', CAST('1.50' AS DECIMAL(18,2)), 'ci'), "
               f"('lv-2', '{held}', CAST('2.00' AS DECIMAL(18,2)), 'ci')) "
               "AS p(payout_id, agent_id, amount_usd, reason)")
    actions = (f"SELECT 'lv-e' AS action_id, 'create' AS action, CAST(NULL AS STRING) AS escrow_id, "
               f"CAST(NULL AS STRING) AS create_action_id, '{payer}' AS buyer_agent_id, '{held}' AS seller_agent_id, "
               f"'12.34' AS amount_usd, 'ci task' AS description, CAST(NULL AS STRING) AS metadata, 'ci' AS reason "
               f"UNION ALL SELECT 'lv-e-release', 'release', NULL, 'lv-e', NULL, NULL, NULL, NULL, NULL, 'ci done'")
    sources = ["--namespace", wh.namespace, "--payouts-sql", payouts, "--actions-sql", actions]
    run("ci-live-1", "run", *sources, "--in-flight-timeout", "8")
    # The release goes out in the run after the create's escrow exists; an unknown outcome is resolved
    # (looked up, sent again if nothing moved) once it is older than the in-flight timeout.
    done = "SELECT count(*) AS n FROM purpleflea.payouts.status WHERE status = 'completed'"
    for attempt in range(2, 5):
        run(f"ci-live-{attempt}", "payouts", *sources, "--in-flight-timeout", "8")
        if pf.query(wh.path, done).column("n")[0].as_py() == 4:
            break
        time.sleep(8.5)
    # More than the 50-entry window between two syncs, the last few in a second of their own (see
    # tests/it/live_sync.rs): the next sync records a gap, and reconcile a ledger_gap finding.
    time.sleep(1.1)
    for _ in range(50):
        pay(payer_key, other, 0.01)
    time.sleep(1.1)
    for _ in range(5):
        pay(payer_key, other, 0.01)
    run("ci-live-5", "run", "--namespace", wh.namespace, "--steps", "sync,reconcile")
    return wh


# ---------------------------------------------------------------------------------------------------------
# Values, canonically: the same value from any engine gives the same text


def _iso_from_ns(ns):
    base = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=ns // 1000)
    return base.strftime("%Y-%m-%dT%H:%M:%S.%f") + (f"{ns % 1000:03d}" if ns % 1000 else "") + "Z"


def canonical_column(col):
    """A column as comparable text values (None for NULL), tagged with the kind of value: an exact decimal
    must not compare equal to a float that prints the same, nor 12.30 to 12.3."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        per_ns = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1000, "ns": 1}[t.unit]
        raw = pc.cast(col, pa.int64()).to_pylist()
        if pa.types.is_timestamp(t):
            return [None if v is None else "ts " + _iso_from_ns(v * per_ns) for v in raw]
        return [None if v is None else f"span {v * per_ns} ns" for v in raw]
    values = col.to_pylist()
    if pa.types.is_interval(t):
        out = []
        for v in values:
            if v is None:
                out.append(None)
            elif v.months:
                out.append(f"interval {v.months} months {v.days} days {v.nanoseconds} ns")
            else:
                out.append(f"span {v.days * 86_400_000_000_000 + v.nanoseconds} ns")
        return out
    if pa.types.is_decimal(t):
        tag, fmt = "dec", str
    elif pa.types.is_floating(t):
        tag, fmt = "float", lambda v: repr(float(v))
    elif pa.types.is_integer(t):
        tag, fmt = "int", str
    elif pa.types.is_boolean(t):
        tag, fmt = "bool", lambda v: str(v).lower()
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        tag, fmt = "str", str
    elif pa.types.is_date(t):
        tag, fmt = "date", lambda v: v.isoformat()
    else:
        tag, fmt = f"{t}", repr
    return [None if v is None else f"{tag} {fmt(v)}" for v in values]


def canonical_rows(table, columns=None):
    columns = columns or table.column_names
    cols = [canonical_column(table.column(c)) for c in columns]
    return [tuple(c[i] for c in cols) for i in range(table.num_rows)]


def sort_key(row):
    return tuple(("", "") if v is None else ("v", v) for v in row)


def checksum(rows):
    h = hashlib.sha256()
    for r in sorted(rows, key=sort_key):
        h.update(json.dumps(r).encode())
    return h.hexdigest()[:16]


def differences(a, b, limit=5):
    """Rows in a and not in b, and in b and not in a (with multiplicity), a few of each."""
    ca, cb = collections.Counter(a), collections.Counter(b)
    only_a = sorted((ca - cb).elements(), key=sort_key)
    only_b = sorted((cb - ca).elements(), key=sort_key)
    return only_a[:limit], only_b[:limit], len(only_a), len(only_b)


# ---------------------------------------------------------------------------------------------------------
# Spark


def spark_name(sql, prefix=""):
    """purpleflea.<schema>.<table> -> <prefix>purpleflea_<schema>.<table>: the one rewrite made for Spark."""
    return re.sub(r"\bpurpleflea\.([a-z_]+)\.([a-z_]+)\b", rf"{prefix}purpleflea_\1.\2", sql)


def start_spark(work):
    os.environ["TZ"] = "UTC"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("pfsync-sql-engines")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.sql.warehouse.dir", str(work / "spark-warehouse"))
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
        .getOrCreate()
    )
    # pyspark logs every refused query with the JVM's stack trace; the refusal is reported here, in a line.
    from pyspark.logger import PySparkLogger

    PySparkLogger.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    return spark


def first_line(e):
    return (str(e).strip().splitlines() or [repr(e)])[0][:300]


def stage(wh, work):
    """Every table read with the deltalake package (the Delta log applied: what a Delta reader sees) and
    written as one Parquet file: `schema.table` -> its folder."""
    staged = {}
    for name, folder in wh.tables().items():
        table = deltalake.DeltaTable(str(folder)).to_pyarrow_table()
        out = work / "staged" / wh.name / name
        out.mkdir(parents=True)
        pq.write_table(table, out / "part-0.parquet")
        staged[name] = out
    return staged


def check_ddl(spark, work, staged):
    """Each sql/ddl/ file as Spark runs it (USING PARQUET in scratch databases): it parses, and its columns
    and types are those of the data pfsync wrote."""
    scratch = work / "ddl-scratch"
    for path in sorted((SQL / "ddl").glob("*.sql")):
        rel = f"ddl/{path.name}"
        name = path.name.removesuffix(".sql").removeprefix("purpleflea.")
        schema = name.split(".")[0]
        text = path.read_text().replace("USING DELTA", "USING PARQUET")
        text = text.replace("<warehouse>", scratch.as_uri()).rstrip().rstrip(";")
        try:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS ddl_purpleflea_{schema}")
            spark.sql(spark_name(text, prefix="ddl_"))
            declared = {f.name: f.dataType.simpleString() for f in spark.table(f"ddl_purpleflea_{name}").schema}
        except Exception as e:
            fail(f"{rel}: Spark refuses it: {first_line(e)}")
            continue
        if name not in staged:
            fail(f"{rel}: no table {name} in the warehouse")
            continue
        data = {f.name: f.dataType.simpleString() for f in spark.read.parquet(str(staged[name])).schema}
        if declared != data:
            names = sorted(declared.keys() | data.keys())
            diff = {k: (declared.get(k), data.get(k)) for k in names if declared.get(k) != data.get(k)}
            fail(f"{rel}: declared columns differ from the data's (declared, data): {diff}")
        else:
            print(f"ok   {rel}: created on Spark (USING PARQUET); {len(declared)} columns, types as the data's")


def register(spark, staged):
    schemas = sorted({n.split(".")[0] for n in staged})
    for s in schemas:
        spark.sql(f"DROP DATABASE IF EXISTS purpleflea_{s} CASCADE")
        spark.sql(f"CREATE DATABASE purpleflea_{s}")
    for name, folder in staged.items():
        spark.sql(f"CREATE TABLE purpleflea_{name} USING PARQUET LOCATION '{folder.as_uri()}'")
    for path in sorted((SQL / "views").glob("*.sql")):
        spark.sql(spark_name(path.read_text()))


# ---------------------------------------------------------------------------------------------------------
# The query files, as both engines run them


def query_files():
    """Every file in sql/ but the DDL (checked on its own), relative to sql/."""
    return sorted(str(p.relative_to(SQL)) for p in SQL.rglob("*.sql") if p.parent.name != "ddl")


def with_params(text, wh, stale_before):
    """pfsync reconcile binds these as typed values; here they are literals of the same types."""
    params = {
        "$stale_before": f"TIMESTAMP '{stale_before.strftime('%Y-%m-%d %H:%M:%S.%f')}'",
        "$key_prefix": f"'pfsync:{wh.namespace}:'",
    }
    for k, v in params.items():
        text = text.replace(k, v)
    return text


def query_text(rel, wh, stale_before, classified_inline):
    """The file's query with its placeholders filled in. `pfsync reconcile` registers classified.sql's result
    as the table `classified`: pfsync sql gets it as a subquery, Spark as a cached view (register_classified)."""
    if rel.startswith("views/"):
        return f"SELECT * FROM {pathlib.Path(rel).stem}"
    text = with_params((SQL / rel).read_text(), wh, stale_before)
    if classified_inline and re.search(r"\bFROM classified\b", text):
        classified = with_params((SQL / "reconcile/classified.sql").read_text(), wh, stale_before)
        text = re.sub(r"\bFROM classified\b", lambda _: f"FROM (\n{classified}\n) classified", text)
    if rel == "auditor/run_trail.sql":
        text = text.replace("RUN_ID", wh.run_id)
    if rel == "examples/labeling_bounty.sql":
        text = LABELING_INPUT + text
    return text


def compare_queries(spark, pf, wh, started):
    stale_before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    files = query_files()
    for rel in files:
        if rel in DATABRICKS_ONLY:
            print(f"skip {wh.name}: {rel}: Databricks only: {DATABRICKS_ONLY[rel]}")
    texts = {rel: query_text(rel, wh, stale_before, True) for rel in files if rel not in DATABRICKS_ONLY}
    classified = with_params((SQL / "reconcile/classified.sql").read_text(), wh, stale_before)
    spark.sql("UNCACHE TABLE IF EXISTS classified")
    spark.sql(f"CREATE OR REPLACE TEMP VIEW classified AS {spark_name(classified)}")
    spark.sql("CACHE TABLE classified")

    def ours(sql):
        t = time.monotonic()
        return pf.query(wh.path, sql), time.monotonic() - t

    # pfsync's side runs in the background while Spark works: a process per query, no shared state.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = {rel: pool.submit(ours, sql) for rel, sql in texts.items()}
        for rel, sql in texts.items():
            engine = "Spark"
            try:
                t = time.monotonic()
                theirs = spark.sql(spark_name(query_text(rel, wh, stale_before, False))).toArrow()
                spark_secs = time.monotonic() - t
                engine = "pfsync"
                mine, pfsync_secs = pending[rel].result()
            except Exception as e:
                fail(f"{wh.name}: {rel}: {engine} refuses it: {first_line(e)}")
                continue
            if compare_result(rel, wh, started, mine, theirs):
                print(f"ok   {wh.name}: {rel}: the same {mine.num_rows} rows on Spark and pfsync "
                      f"(Spark {spark_secs:.1f} s, pfsync {pfsync_secs:.1f} s)")
            rows_seen[rel] = rows_seen.get(rel, 0) + mine.num_rows


def compare_result(rel, wh, started, ours, theirs):
    """True when both results hold the same rows under the same column names."""
    if ours.column_names != theirs.column_names:
        fail(f"{wh.name}: {rel}: columns differ: pfsync {ours.column_names}, Spark {theirs.column_names}")
        return False
    a, b = canonical_rows(ours), canonical_rows(theirs)
    clock = CLOCK_COLUMNS.get(rel, set())
    if clock:
        a, b = (clock_checked(rows, ours.column_names, clock, started, rel, wh, engine)
                for rows, engine in ((a, "pfsync"), (b, "Spark")))
    only_a, only_b, na, nb = differences(a, b)
    if na or nb:
        fail(f"{wh.name}: {rel}: {na} row(s) only in pfsync's result, {nb} only in Spark's; for instance"
             f"\n  pfsync: {only_a}\n  Spark:  {only_b}")
    return not (na or nb)


def clock_checked(rows, names, clock, started, rel, wh, engine):
    """A clock column's value checked to be a time within this check, then left out of the comparison."""
    idx = [names.index(c) for c in clock]
    low, high = _iso_from_ns(int(started * 1e9)), _iso_from_ns(int((time.time() + 1) * 1e9))
    out = []
    for r in rows:
        for i in idx:
            if r[i] is None or not (f"ts {low}" <= r[i] <= f"ts {high}"):
                fail(f"{wh.name}: {rel}: {engine}'s {names[i]} is {r[i]}, not a time of this check")
        out.append(tuple("(clock)" if i in idx else v for i, v in enumerate(r)))
    return out


# ---------------------------------------------------------------------------------------------------------
# DuckDB's Delta extension


def duckdb_with_delta():
    import duckdb_ext

    folder = pathlib.Path(list(duckdb_ext.__path__)[0]) / "extensions"
    con = duckdb.connect()
    # The extension comes from the installed package, never from the network.
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET extension_directory = ?", [str(folder)])
    con.execute("LOAD delta")
    return con


def read_all(con, pf, wh):
    """Every table as deltalake reads it and as DuckDB's delta_scan reads it (same rows or a failure),
    and pfsync's row counts: `schema.table` -> (rows, checksum)."""
    tables = wh.tables()
    counts = pf.query(
        wh.path,
        " UNION ALL ".join(f"SELECT '{n}' AS t, count(*) AS n FROM purpleflea.{n}" for n in tables),
    ).to_pylist()
    counts = {r["t"]: r["n"] for r in counts}
    seen = {}
    for name, folder in tables.items():
        ours = deltalake.DeltaTable(str(folder)).to_pyarrow_table()
        theirs = con.sql(f"SELECT * FROM delta_scan('{folder}')").fetch_arrow_table()
        if sorted(ours.column_names) != sorted(theirs.column_names):
            fail(f"{wh.name}: {name}: columns: deltalake {ours.column_names}, DuckDB {theirs.column_names}")
            continue
        a = canonical_rows(ours)
        b = canonical_rows(theirs, ours.column_names)
        only_a, only_b, na, nb = differences(a, b)
        if na or nb:
            fail(f"{wh.name}: {name}: {na} row(s) only deltalake reads, {nb} only DuckDB reads; for instance"
                 f"\n  deltalake: {only_a}\n  DuckDB:    {only_b}")
        if counts.get(name) != len(a):
            fail(f"{wh.name}: {name}: pfsync counts {counts.get(name)} rows, deltalake reads {len(a)}")
        seen[name] = (len(a), checksum(a))
    return seen


def drop_covered_commits(wh):
    """Delete the commits each table's last checkpoint covers, as log cleanup does once they expire."""
    dropped = 0
    for folder in wh.tables().values():
        log = folder / "_delta_log"
        version = json.loads((log / "_last_checkpoint").read_text())["version"]
        for f in log.glob("*.json"):
            if int(f.stem) <= version:
                f.unlink()
                dropped += 1
    return dropped


def check_delta_readers(pf, wh):
    con = duckdb_with_delta()
    fresh = read_all(con, pf, wh)
    pf.run(wh.path, "maintain", "--i-know", "--retention-hours", "0")
    maintained = read_all(con, pf, wh)
    dropped = drop_covered_commits(wh)
    checkpoint_only = read_all(con, pf, wh)
    for name, (rows, digest) in fresh.items():
        states = {"maintained": maintained.get(name), "checkpoint only": checkpoint_only.get(name)}
        changed = {s: v for s, v in states.items() if v != (rows, digest)}
        if changed:
            fail(f"{wh.name}: {name}: as written {rows} rows {digest}; then {changed}")
        else:
            print(f"ok   {wh.name}: {name}: DuckDB delta_scan = deltalake = pfsync count: {rows} rows, "
                  f"sha256 {digest}, as written, maintained, and checkpoint only")
    print(f"     {wh.name}: {dropped} commits covered by checkpoints deleted for the last state")


# ---------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pfsync", required=True, help="the pfsync binary")
    ap.add_argument("--work", help="a new folder for the warehouses and staged copies, kept (default: a temporary "
                                   "one, removed)")
    ap.add_argument("--live-bed", type=pathlib.Path,
                    help="state folder of a running test bed of Purple Flea's services (casino.url, escrow.url): "
                         "adds a warehouse of the live provider's tables")
    ap.add_argument("--live-scripts", type=pathlib.Path, default=REPO.parent / "shared" / "purpleflea-live",
                    help="the test bed's agents.py and fund.py (default: %(default)s)")
    args = ap.parse_args()
    started = time.time()
    pf = Pfsync(args.pfsync)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="pfsync-sql-engines-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.monotonic()
        warehouses = [make_demo_warehouse(pf, work), make_runs_warehouse(pf, work)]
        if args.live_bed:
            warehouses.append(make_live_warehouse(pf, work, args.live_bed.resolve(), args.live_scripts.resolve()))
        print(f"{len(warehouses)} warehouses written by pfsync in {time.monotonic() - t:.0f} s")
        t = time.monotonic()
        spark = start_spark(work)
        print(f"Spark {spark.version} started in {time.monotonic() - t:.0f} s")
        for i, wh in enumerate(warehouses):
            t = time.monotonic()
            staged = stage(wh, work)
            if i == 0:
                check_ddl(spark, work, staged)
            register(spark, staged)
            compare_queries(spark, pf, wh, started)
            print(f"{wh.name}: staged and compared on Spark in {time.monotonic() - t:.0f} s")
        spark.stop()
        empty = sorted(rel for rel, n in rows_seen.items() if n == 0)
        if empty:
            print(f"note: no rows in any warehouse, so only accepted by both engines: {', '.join(empty)}")
        print(f"duckdb {duckdb.__version__}, deltalake {deltalake.__version__}")
        for wh in warehouses:
            t = time.monotonic()
            check_delta_readers(pf, wh)
            print(f"{wh.name}: Delta readers compared in {time.monotonic() - t:.0f} s")
    except Exception as e:
        fail(f"the check itself: {type(e).__name__}: {e}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"sql-engines: {len(failures)} failure(s) in {time.time() - started:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
