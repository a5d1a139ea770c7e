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


def ensure_tls(state_dir: Path, hosts: list[str]) -> TlsFiles:
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="switchyard emulator")
        _write_private(ca_key, ca.private_key_pem.bytes())
        ca_cert.write_bytes(ca.cert_pem.bytes())
    identities = list(dict.fromkeys(["127.0.0.1", "localhost", "::1", *hosts]))
    leaf = ca.issue_cert(*identities)
    chain, key = tls_dir / "server.pem", tls_dir / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write_private(key, leaf.private_key_pem.bytes())
    return TlsFiles(ca_bundle=ca_cert, cert_chain=chain, private_key=key)
