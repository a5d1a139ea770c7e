"""One process of a fleet: a burst of Log Analytics queries through switchyard's clients.

    python -m tests.integration.cloud.query_burst_process EMULATOR_FILE QUERIES [--shared]

--shared gives the clients the budget every process shares through the Prefect server this
process's PREFECT_API_URL names (as cloud_for does in a flow run); without it, the process paces
its queries by its own count only. Prints one JSON line: the status codes of the queries that
failed, and the seconds this process waited for the shared budget.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from azure.core.exceptions import HttpResponseError

from switchyard.cloud.azure import AzureClients
from switchyard.cloud.shared_rate import SharedQueryRate, shared_log_query_rate
from switchyard.core.config import AzureEnvironment
from tests.integration.cloud.cloud_support import SSH_PUBLIC_KEY

THREADS = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("emulator_file")
    parser.add_argument("queries", type=int)
    parser.add_argument("--shared", action="store_true")
    args = parser.parse_args()
    environment = AzureEnvironment(
        name="fleet",
        auth="emulator",
        emulator_file=args.emulator_file,
        resource_group="switchyard-fleet",
        ssh_public_key=SSH_PUBLIC_KEY,
    )
    clients = AzureClients(environment, shared_query_gate=shared_log_query_rate if args.shared else None)
    workspace = clients.log_analytics_workspace_id
    assert workspace is not None

    def query(_: int) -> str | None:
        try:
            clients.logs.query_workspace(workspace, "AzureDiagnostics | take 1", timespan=timedelta(hours=1))
        except HttpResponseError as error:
            return str(error.status_code)
        return None

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        errors = [error for error in pool.map(query, range(args.queries)) if error is not None]
    gate = clients.shared_log_query_gate
    waited = gate.waited_s if isinstance(gate, SharedQueryRate) else 0.0
    print(json.dumps({"errors": errors, "shared_wait_s": round(waited, 1)}))


if __name__ == "__main__":
    main()
