"""What the stack's Prefect clients are told to trust (client_environment, use_local_stack).

Prefect builds a certificate-verifying TLS context for every client it makes, even for a plain-HTTP
API; for the stack's own http:// server the emulator's one-certificate CA is given instead of the
system's roots, which costs a flow run a second of CPU. Never for an https:// API, never over a
file someone chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.stack.state import StackPaths, client_environment

LOCAL_API = "http://127.0.0.1:4200/api"


def _stack_with_emulator_ca(tmp_path: Path) -> tuple[StackPaths, Path]:
    paths = StackPaths(state_dir=tmp_path / "state")
    paths.emulator_dir.mkdir(parents=True)
    ca_bundle = paths.emulator_dir / "tls" / "ca.pem"
    ca_bundle.parent.mkdir()
    ca_bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    paths.emulator_file.write_text(json.dumps({"endpoint": "https://127.0.0.1:1", "ca_bundle": str(ca_bundle)}))
    return paths, ca_bundle


@pytest.fixture(autouse=True)
def _no_chosen_cert_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_SSL_CERT_FILE", raising=False)


def test_clients_of_the_plain_http_api_trust_the_stacks_one_certificate(tmp_path: Path) -> None:
    paths, ca_bundle = _stack_with_emulator_ca(tmp_path)
    env = client_environment(paths, LOCAL_API)
    assert env["PREFECT_API_SSL_CERT_FILE"] == str(ca_bundle)
    assert env["PREFECT_API_URL"] == LOCAL_API


def test_an_https_api_keeps_prefects_own_trust(tmp_path: Path) -> None:
    paths, _ = _stack_with_emulator_ca(tmp_path)
    assert "PREFECT_API_SSL_CERT_FILE" not in client_environment(paths, "https://prefect.example.com/api")


def test_a_cert_file_someone_chose_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, _ = _stack_with_emulator_ca(tmp_path)
    monkeypatch.setenv("PREFECT_API_SSL_CERT_FILE", "/etc/ssl/corporate.pem")
    assert client_environment(paths, LOCAL_API)["PREFECT_API_SSL_CERT_FILE"] == "/etc/ssl/corporate.pem"


def test_without_the_emulators_ca_nothing_is_set(tmp_path: Path) -> None:
    paths, ca_bundle = _stack_with_emulator_ca(tmp_path)
    ca_bundle.unlink()  # a file that is not there would fail every Prefect client it was given to
    assert "PREFECT_API_SSL_CERT_FILE" not in client_environment(paths, LOCAL_API)
    paths.emulator_file.unlink()
    assert "PREFECT_API_SSL_CERT_FILE" not in client_environment(paths, LOCAL_API)
