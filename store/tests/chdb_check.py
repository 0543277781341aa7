#!/usr/bin/env python3
"""Checks Yaffle's modern ClickHouse DDL in-process with chdb (a modern ClickHouse, PyPI chdb-core).

Reads JSON on stdin:
  {"format": [sql...],            statements whose syntax formatQuery must accept (Replicated, ON CLUSTER)
   "execute": [sql...],           statements to run (local engines)
   "insert": [table, columns, path],  RowBinary file to insert into table (columns: its structure)
   "checks": [[sql, expected]]}   queries and their expected TSV answer
Prints what fails and exits 1, or prints "ok".
"""
import json
import sys

from chdb import session

spec = json.load(sys.stdin)
s = session.Session()
failed = []


def run(sql, fmt="TSV"):
    try:
        return str(s.query(sql, fmt)).strip()
    except Exception as e:  # chdb raises with the server's message
        failed.append(f"{sql[:120]}...: {e}")
        return None


for sql in spec.get("format", []):
    run("SELECT formatQuery('%s')" % sql.replace("\\", "\\\\").replace("'", "\\'"))
for sql in spec.get("execute", []):
    run(sql)
if "insert" in spec:
    table, columns, path = spec["insert"]
    run(f"INSERT INTO {table} SELECT * FROM file('{path}', RowBinary, '{columns}')")
for sql, expected in spec.get("checks", []):
    got = run(sql)
    if got is not None and got != expected:
        failed.append(f"{sql}: expected {expected!r}, got {got!r}")
if failed:
    print("\n".join(failed))
    sys.exit(1)
print("ok")
