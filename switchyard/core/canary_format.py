"""How the canary judge writes numbers in its messages and reports: shares, percentage points, ms,
bytes."""

from __future__ import annotations


def pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def pp(difference: float, signed: bool = True) -> str:
    """A difference of two rates in percentage points."""
    return f"{difference * 100:+.2f} pp" if signed else f"{difference * 100:.2f} pp"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 10:
        return f"{value:.2f} ms"
    if abs(value) < 1000:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "-") + ms(abs(value))


def byte_size(value: float) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 2.0 MiB."""
    if abs(value) < 1024:
        return f"{value:.0f} B"
    if abs(value) < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"
