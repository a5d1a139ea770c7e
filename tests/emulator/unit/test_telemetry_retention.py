"""The emulator keeps telemetry for its retention and then forgets it: instance samples and the
gateway's access log and health samples alike, or a stack left running under traffic grows its
telemetry database with every request, forever."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from switchyard_emulator.dataplane.telemetry import SampleWriter, ensure_schema

GATEWAYS = ("/subscriptions/s/resourcegroups/a/providers/microsoft.network/applicationgateways/one", "/x/two")
CUTOFF = 1_000.0


def access_row(ts: float, gateway_id: str) -> tuple[object, ...]:
    return (ts, gateway_id, "production", "rule", "blue", "settings", "127.1.0.1:8000", "GET", "/", "client",
            200, 200, 1.5, 1.0, 10, 20)  # fmt: skip


def test_pruning_forgets_every_kind_of_telemetry_older_than_the_cutoff_and_keeps_the_rest(tmp_path: Path) -> None:
    database = tmp_path / "telemetry.sqlite"
    ensure_schema(database)
    with sqlite3.connect(database) as connection:
        for ts in (CUTOFF - 500, CUTOFF - 1, CUTOFF, CUTOFF + 1):
            for gateway_id in GATEWAYS:
                connection.execute(
                    "INSERT INTO access_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", access_row(ts, gateway_id)
                )
                connection.execute(
                    "INSERT INTO backend_health_samples VALUES (?,?,?,?,?,?)",
                    (ts, gateway_id, "blue", "settings", 1, 0),
                )
            connection.execute(
                "INSERT INTO instance_samples VALUES (?,?,?,?,?,?)", (ts, "/vmss", "0", "vmss_0", 5.0, 1e9)
            )

    writer = SampleWriter(database)
    try:
        writer.prune(CUTOFF)
    finally:
        writer.close()

    with sqlite3.connect(database) as connection:
        for table in ("access_log", "backend_health_samples", "instance_samples"):
            kept = sorted({row[0] for row in connection.execute(f"SELECT ts FROM {table}")})
            assert kept == [CUTOFF, CUTOFF + 1], table
        per_gateway = dict(connection.execute("SELECT gateway_id, count(*) FROM access_log GROUP BY gateway_id"))
        assert per_gateway == dict.fromkeys(GATEWAYS, 2)
