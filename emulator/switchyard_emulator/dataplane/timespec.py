"""ISO 8601 durations, instants and intervals, as Azure Monitor and Log Analytics take them."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"weeks": 604_800, "days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}
# Python 3.11 reads at most 6 fractional digits; .NET (and Log Analytics) write 7.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


class TimeSpecError(ValueError):
    """A duration, instant or interval that cannot be read."""


def parse_duration(text: str) -> float:
    """'PT1M' -> 60.0, 'PT0.5S' -> 0.5, 'P1DT2H' -> 93600.0 (years and months are refused)."""
    match = _DURATION.match(text.strip())
    if not match or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise TimeSpecError(f"'{text}' is not an ISO 8601 duration like PT1M or PT5S (no years/months)")
    return sum(float(value) * _UNIT_SECONDS[unit] for unit, value in match.groupdict().items() if value)


def format_duration(seconds: float) -> str:
    """60 -> 'PT1M', 86400 -> 'P1D', 5 -> 'PT5S', 0.5 -> 'PT0.5S'."""
    if seconds <= 0:
        return "PT0S"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    text = "P"
    if days:
        text += f"{int(days)}D"
    if hours or minutes or secs:
        text += "T"
        if hours:
            text += f"{int(hours)}H"
        if minutes:
            text += f"{int(minutes)}M"
        if secs:
            text += f"{int(secs)}S" if float(secs).is_integer() else f"{round(secs, 6):g}S"
    return text


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time; without an offset it is UTC (as Azure reads it)."""
    cleaned = _LONG_FRACTION.sub(r"\1", text.strip())
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError as exc:
        raise TimeSpecError(f"'{text}' is not an ISO 8601 date-time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_interval(text: str, now: datetime) -> tuple[datetime, datetime]:
    """'start/end', 'start/duration', 'duration/end' or 'duration' (ending now) -> (start, end)."""
    parts = [part.strip() for part in text.split("/")]
    if len(parts) == 1:
        return now - timedelta(seconds=parse_duration(parts[0])), now
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise TimeSpecError(f"timespan '{text}' must be 'start/end', 'start/duration' or a duration")
    first, second = parts
    if first.upper().startswith("P"):
        end = parse_instant(second)
        return end - timedelta(seconds=parse_duration(first)), end
    start = parse_instant(first)
    if second.upper().startswith("P"):
        return start, start + timedelta(seconds=parse_duration(second))
    return start, parse_instant(second)


def format_instant(moment: datetime | float) -> str:
    """Azure's form: '2021-04-20T09:00:00Z', with a fraction only when there is one."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def floor_to(seconds: float, step: float) -> float:
    """Align an epoch time down to a multiple of `step` (buckets start on whole grains)."""
    return math.floor(seconds / step) * step
