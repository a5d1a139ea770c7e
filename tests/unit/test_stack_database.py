"""A PostgreSQL of your own for the stack (`--database-url`): what is kept where.

The password must end up in one 0600 pgpass file and nowhere in what stack.json records or what the
Prefect server is given as its connection URL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from switchyard.stack.postgres import DatabaseError, external_database


def test_the_password_goes_to_a_0600_pgpass_file_and_nowhere_else(tmp_path: Path) -> None:
    passfile = tmp_path / "database.pgpass"
    config = external_database("postgresql://prefect:s3cr:et@db.internal:5433/prefect?ssl=require", passfile)

    assert config.kind == "external"
    assert config.url == "postgresql+asyncpg://prefect@db.internal:5433/prefect?ssl=require"
    assert config.passfile == str(passfile)
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert passfile.read_text() == "*:*:*:*:s3cr:et\n"  # asyncpg reads the rest of the line as the password
    assert "s3cr" not in config.model_dump_json()
    assert config.server_environment() == {
        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://prefect@db.internal:5433/prefect?ssl=require",
        "PGPASSFILE": str(passfile),
    }
    assert "s3cr" not in config.describe()


def test_a_url_without_password_keeps_no_passfile(tmp_path: Path) -> None:
    passfile = tmp_path / "database.pgpass"
    passfile.write_text("*:*:*:*:old\n")
    config = external_database("postgresql+asyncpg://prefect@db.internal/prefect", passfile)
    assert config.passfile is None and not passfile.exists()
    assert "PGPASSFILE" not in config.server_environment()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg2://u:p@h/db", "needs postgresql+asyncpg://"),
        ("sqlite+aiosqlite:///x.db", "needs postgresql+asyncpg://"),
        ("postgresql://u:p@h", "must name a host and a database"),
        ("not a url", "is not a URL"),
    ],
)
def test_urls_prefect_cannot_use_are_refused_without_echoing_the_password(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        external_database(url, tmp_path / "pgpass")
    assert says in str(refused.value)
    assert ":p@" not in str(refused.value)
    assert not (tmp_path / "pgpass").exists()
