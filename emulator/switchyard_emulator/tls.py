"""The emulator's HTTPS identity: a trustme CA kept in DIR/tls (so a restart keeps the same CA and
clients' ca_bundle stays valid) and a fresh leaf certificate for the served host names each start."""

from __future__ import annotations

import os
from pathlib import Path

import trustme
from pydantic import BaseModel


class TlsFiles(BaseModel):
    ca_bundle: Path
    cert_chain: Path
    private_key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_ca(state_dir: Path) -> trustme.CA:
    """The emulator's CA in STATE/tls, made on first use. Azurite's certificate is signed by it too
    (switchyard_emulator.azurite), so one ca_bundle lets clients trust both."""
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        return trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
    ca = trustme.CA(organization_name="switchyard emulator")
    _write_private(ca_key, ca.private_key_pem.bytes())
    ca_cert.write_bytes(ca.cert_pem.bytes())
    return ca


def ensure_tls(state_dir: Path, hosts: list[str], *, name: str = "server", out_dir: Path | None = None) -> TlsFiles:
    """A fresh leaf certificate for `hosts` signed by the CA of `state_dir`, written as NAME.pem and
    NAME.key in `out_dir` (default: STATE/tls)."""
    ca = ensure_ca(state_dir)
    tls_dir = out_dir or state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_cert = state_dir / "tls" / "ca.pem"
    identities = list(dict.fromkeys(["127.0.0.1", "localhost", "::1", *hosts]))
    leaf = ca.issue_cert(*identities)
    chain, key = tls_dir / f"{name}.pem", tls_dir / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write_private(key, leaf.private_key_pem.bytes())
    return TlsFiles(ca_bundle=ca_cert, cert_chain=chain, private_key=key)
