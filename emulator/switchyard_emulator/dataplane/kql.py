"""A small, real KQL (Kusto Query Language) engine for the emulator's Log Analytics answers.

tokenize() -> Parser (recursive descent, precedence climbing) -> a Query of operators whose
expressions are compiled to Python closures -> run over rows (dicts). The supported subset is
documented in KQL.md next to this file; anything else is refused with a LogsQueryError naming the
token (SyntaxError) or the name that cannot be resolved (SemanticError), which the control plane
returns as a Log Analytics 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from switchyard_emulator.dataplane.errors import LogsQueryError
from switchyard_emulator.dataplane.timespec import TimeSpecError, parse_instant

Row = dict[str, Any]
Evaluator = Callable[[Row], Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Column types as Log Analytics names them in answers.
STRING, REAL, LONG, INT, BOOL, DATETIME, TIMESPAN = (
    "string",
    "real",
    "long",
    "int",
    "bool",
    "datetime",
    "timespan",
)
NUMERIC = {REAL, LONG, INT}

# ============================================================================================
# Tokens
# ============================================================================================

_TIMESPAN_UNITS: dict[str, float] = {
    "d": 86_400, "day": 86_400, "days": 86_400,
    "h": 3_600, "hr": 3_600, "hrs": 3_600, "hour": 3_600, "hours": 3_600,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "ms": 1e-3, "milli": 1e-3, "millis": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "microsecond": 1e-6, "microseconds": 1e-6, "tick": 1e-7, "ticks": 1e-7,
}  # fmt: skip
_NEGATABLE = ("in~", "in", "between", "contains", "has", "startswith", "endswith", "contains_cs", "has_cs")
_SYMBOLS = (
    "..",
    "==",
    "!=",
    "=~",
    "!~",
    "<=",
    ">=",
    "|",
    "(",
    ")",
    ",",
    "<",
    ">",
    "=",
    "+",
    "-",
    "*",
    "/",
    "%",
)


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, timespan, datetime, op, end
    text: str
    value: Any
    position: int
    line: int
    column: int


def _syntax_error(token: Token, expected: str) -> LogsQueryError:
    shown = "end of query" if token.kind == "end" else f"'{token.text}'"
    return LogsQueryError(
        "SyntaxError",
        f"Query could not be parsed at {shown} on line [{token.line},{token.column}]: expected {expected}",
    )


def semantic_error(message: str) -> LogsQueryError:
    return LogsQueryError("SemanticError", message)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position, length = 0, len(text)
    line_starts = [0] + [match.end() for match in re.finditer(r"\n", text)]

    def where(offset: int) -> tuple[int, int]:
        line = max(index for index, start in enumerate(line_starts) if start <= offset)
        return line + 1, offset - line_starts[line] + 1

    def add(kind: str, start: int, end: int, value: Any = None) -> None:
        line, column = where(start)
        tokens.append(Token(kind, text[start:end], value, start, line, column))

    while position < length:
        char = text[position]
        if char.isspace():
            position += 1
            continue
        if text.startswith("//", position):  # comment to end of line
            newline = text.find("\n", position)
            position = length if newline < 0 else newline
            continue
        start = position
        if char in "'\"" or (char == "@" and position + 1 < length and text[position + 1] in "'\""):
            verbatim = char == "@"
            if verbatim:
                position += 1
            quote = text[position]
            position += 1
            chars: list[str] = []
            while True:
                if position >= length:
                    line, column = where(start)
                    raise LogsQueryError(
                        "SyntaxError",
                        f"Query could not be parsed: unterminated string on line [{line},{column}]",
                    )
                current = text[position]
                if current == "\\" and not verbatim and position + 1 < length:
                    escaped = text[position + 1]
                    chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(escaped, escaped))
                    position += 2
                    continue
                if current == quote:
                    position += 1
                    break
                chars.append(current)
                position += 1
            add("string", start, position, "".join(chars))
            continue
        if char.isdigit() or (char == "." and position + 1 < length and text[position + 1].isdigit()):
            match = re.compile(r"\d*\.?\d+(?:[eE][+-]?\d+)?|\d+\.").match(text, position)
            assert match is not None
            if text.startswith("..", match.end() - 1) and match.group().endswith("."):
                match = re.compile(r"\d+").match(text, position)  # "1..5": the dots are the range op
                assert match is not None
            number_text = match.group()
            position = match.end()
            unit_match = re.compile(r"[A-Za-z]+").match(text, position)
            if unit_match and unit_match.group().lower() in _TIMESPAN_UNITS:
                position = unit_match.end()
                seconds = float(number_text) * _TIMESPAN_UNITS[unit_match.group().lower()]
                add("timespan", start, position, timedelta(seconds=seconds))
                continue
            is_real = any(c in number_text for c in ".eE")
            add("number", start, position, float(number_text) if is_real else int(number_text))
            continue
        if char.isalpha() or char == "_":
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?<!-)").match(text, position)
            assert match is not None
            word = match.group()
            # '-' is allowed inside operator names like project-away, not in column names.
            if "-" in word and word.lower() not in ("project-away", "project-rename", "project-keep"):
                word = word.split("-", 1)[0]
            position += len(word)
            if word.lower() in ("datetime", "todatetime") and text[position:].lstrip().startswith("("):
                # datetime(2024-01-01 10:00) holds raw text, not an expression.
                open_at = text.index("(", position)
                close_at = text.find(")", open_at)
                if close_at < 0:
                    line, column = where(start)
                    raise LogsQueryError(
                        "SyntaxError",
                        f"Query could not be parsed: datetime( without ')' on line [{line},{column}]",
                    )
                raw = text[open_at + 1 : close_at].strip()
                if word.lower() == "datetime" or (raw and raw[0] not in "'\""):
                    position = close_at + 1
                    add("datetime", start, position, _parse_datetime_literal(raw, start, where))
                    continue
            if word == "in" and text.startswith("~", position):
                position += 1
                add("ident", start, position, "in~")
                continue
            add("ident", start, position, word)
            continue
        if char == "!" and position + 1 < length and text[position + 1].isalpha():
            match = re.compile(r"!([A-Za-z_]+~?)").match(text, position)
            assert match is not None
            if match.group(1).lower() in _NEGATABLE:
                position = match.end()
                add("op", start, position, "!" + match.group(1).lower())
                continue
        for symbol in _SYMBOLS:
            if text.startswith(symbol, position):
                position += len(symbol)
                add("op", start, position, symbol)
                break
        else:
            line, column = where(start)
            raise LogsQueryError(
                "SyntaxError",
                f"Query could not be parsed at '{char}' on line [{line},{column}]: unexpected character",
            )
    line, column = where(length) if length else (1, 1)
    tokens.append(Token("end", "", None, length, line, column))
    return tokens


def _parse_datetime_literal(raw: str, start: int, where: Callable[[int], tuple[int, int]]) -> datetime:
    cleaned = raw.strip("'\"").strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}(:\d{2}(\.\d+)?)?", cleaned):
        cleaned = cleaned.replace(" ", "T")
    try:
        return parse_instant(cleaned)
    except TimeSpecError as exc:
        line, column = where(start)
        raise LogsQueryError(
            "SyntaxError",
            f"Query could not be parsed: datetime({raw}) is not a date-time on line [{line},{column}]",
        ) from exc


# ============================================================================================
# Expressions: AST nodes that know their type and compile to closures
# ============================================================================================


class Expr:
    def type_of(self, schema: dict[str, str]) -> str:
        raise NotImplementedError

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        raise NotImplementedError

    def columns(self) -> set[str]:
        return set()

    def default_name(self) -> str | None:
        return None


@dataclass
class Context:
    now: datetime


@dataclass
class Literal(Expr):
    value: Any
    kind: str

    def type_of(self, schema: dict[str, str]) -> str:
        return self.kind

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        value = self.value
        return lambda row: value


@dataclass
class Column(Expr):
    name: str
    token: Token

    def type_of(self, schema: dict[str, str]) -> str:
        if self.name not in schema:
            raise semantic_error(_unknown_name(self.name, schema))
        return schema[self.name]

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        self.type_of(schema)
        name = self.name
        return lambda row: row.get(name)

    def columns(self) -> set[str]:
        return {self.name}

    def default_name(self) -> str | None:
        return self.name


def _unknown_name(name: str, schema: dict[str, str]) -> str:
    close = [column for column in schema if column.lower() == name.lower()]
    hint = f" (column names are case-sensitive: did you mean '{close[0]}'?)" if close else ""
    return f"Failed to resolve scalar expression named '{name}'{hint}"


def _compatible(left: str, right: str) -> bool:
    return left == right or (left in NUMERIC and right in NUMERIC)


def _null_safe(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        if left is None or right is None:
            return None
        return function(left, right)

    return apply


def _has_term(haystack: str, needle: str) -> bool:
    needle = needle.lower()
    return any(term == needle for term in re.split(r"[^0-9a-z_]+", haystack.lower())) or (
        bool(needle) and not re.fullmatch(r"[0-9a-z_]+", needle) and needle in haystack.lower()
    )


_STRING_PREDICATES: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda a, b: b.lower() in a.lower(),
    "contains_cs": lambda a, b: b in a,
    "has": _has_term,
    "has_cs": lambda a, b: b in re.split(r"[^0-9A-Za-z_]+", a),
    "startswith": lambda a, b: a.lower().startswith(b.lower()),
    "endswith": lambda a, b: a.lower().endswith(b.lower()),
}


@dataclass
class Binary(Expr):
    op: str
    left: Expr
    right: Expr
    token: Token

    def type_of(self, schema: dict[str, str]) -> str:
        op = self.op
        left, right = self.left.type_of(schema), self.right.type_of(schema)
        if op in ("and", "or"):
            if left != BOOL or right != BOOL:
                raise semantic_error(f"'{op}' needs bool operands, not {left} and {right}")
            return BOOL
        if op in ("==", "!=", "<", "<=", ">", ">="):
            if not _compatible(left, right):
                raise semantic_error(f"Cannot compare a {left} with a {right} using '{op}'")
            return BOOL
        if op in ("=~", "!~") or op.lstrip("!") in _STRING_PREDICATES:
            if left != STRING or right != STRING:
                raise semantic_error(f"Operator '{op}' needs strings on both sides, not {left} and {right}")
            return BOOL
        if op in ("+", "-"):
            if left == DATETIME and right == TIMESPAN:
                return DATETIME
            if left == DATETIME and right == DATETIME and op == "-":
                return TIMESPAN
            if left == TIMESPAN and right == TIMESPAN:
                return TIMESPAN
            if left == TIMESPAN and right == DATETIME and op == "+":
                return DATETIME
        if op in ("+", "-", "*", "/", "%"):
            if left in NUMERIC and right in NUMERIC:
                if REAL in (left, right):
                    return REAL
                return LONG if LONG in (left, right) else left
            if left == TIMESPAN and right in NUMERIC and op in ("*", "/"):
                return TIMESPAN
            if left == TIMESPAN and right == TIMESPAN and op == "/":
                return REAL
        raise semantic_error(f"Operator '{op}' cannot be applied to a {left} and a {right}")

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        result_type = self.type_of(schema)
        left = self.left.compile(schema, context)
        right = self.right.compile(schema, context)
        op = self.op
        if op == "and":
            return lambda row: bool(left(row)) and bool(right(row))
        if op == "or":
            return lambda row: bool(left(row)) or bool(right(row))
        if op == "=~":
            return lambda row: _lower(left(row)) == _lower(right(row))
        if op == "!~":
            return lambda row: _lower(left(row)) != _lower(right(row))
        negated = op.startswith("!") and op not in ("!=", "!~")
        predicate = _STRING_PREDICATES.get(op.lstrip("!"))
        if predicate is not None:

            def string_test(row: Row) -> bool:
                a, b = left(row), right(row)
                return (predicate(a or "", b or "")) != negated

            return string_test
        comparisons: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        if op in comparisons:
            compare = comparisons[op]

            def comparison(row: Row) -> bool:
                a, b = left(row), right(row)
                if a is None or b is None:
                    return False  # null compares as false, like Kusto's where
                return bool(compare(a, b))

            return comparison
        integer_result = result_type in (LONG, INT)
        arithmetic: dict[str, Callable[[Any, Any], Any]] = {
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "/": (lambda a, b: _int_divide(a, b)) if integer_result else (lambda a, b: _divide(a, b)),
            "%": lambda a, b: math.fmod(a, b) if b else None,
        }
        function = _null_safe(arithmetic[op])
        return lambda row: function(left(row), right(row))

    def columns(self) -> set[str]:
        return self.left.columns() | self.right.columns()

    def default_name(self) -> str | None:
        return None


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _divide(a: Any, b: Any) -> Any:
    if isinstance(a, timedelta) and isinstance(b, timedelta):
        return a / b if b else None
    if isinstance(a, timedelta):
        return a / b if b else None
    if b == 0:
        return math.copysign(math.inf, a) if a else math.nan
    return a / b


def _int_divide(a: int, b: int) -> int | None:
    if b == 0:
        return None
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


@dataclass
class Unary(Expr):
    op: str
    operand: Expr
    token: Token

    def type_of(self, schema: dict[str, str]) -> str:
        kind = self.operand.type_of(schema)
        if kind not in NUMERIC and kind != TIMESPAN:
            raise semantic_error(f"Unary '-' cannot be applied to a {kind}")
        return kind

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        self.type_of(schema)
        operand = self.operand.compile(schema, context)
        return lambda row: None if (value := operand(row)) is None else -value

    def columns(self) -> set[str]:
        return self.operand.columns()


@dataclass
class InList(Expr):
    subject: Expr
    items: list[Expr]
    negated: bool
    case_insensitive: bool

    def type_of(self, schema: dict[str, str]) -> str:
        subject = self.subject.type_of(schema)
        for item in self.items:
            kind = item.type_of(schema)
            if not _compatible(subject, kind):
                raise semantic_error(f"'in' compares a {subject} with a {kind}")
        return BOOL

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        self.type_of(schema)
        subject = self.subject.compile(schema, context)
        items = [item.compile(schema, context) for item in self.items]
        negated, folded = self.negated, self.case_insensitive
        constant = all(isinstance(item, Literal) for item in self.items)
        if constant:
            values = {_lower(item({})) if folded else item({}) for item in items}

            def in_constant(row: Row) -> bool:
                value = subject(row)
                return ((_lower(value) if folded else value) in values) != negated

            return in_constant

        def in_dynamic(row: Row) -> bool:
            value = subject(row)
            found = {_lower(item(row)) if folded else item(row) for item in items}
            return ((_lower(value) if folded else value) in found) != negated

        return in_dynamic

    def columns(self) -> set[str]:
        return self.subject.columns().union(*(item.columns() for item in self.items))


@dataclass
class Between(Expr):
    subject: Expr
    low: Expr
    high: Expr
    negated: bool

    def type_of(self, schema: dict[str, str]) -> str:
        subject, low, high = (part.type_of(schema) for part in (self.subject, self.low, self.high))
        if not _compatible(subject, low) or not (_compatible(subject, high) or (low == DATETIME and high == TIMESPAN)):
            raise semantic_error(f"'between' needs a range of the subject's type ({subject}), got {low} .. {high}")
        return BOOL

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        self.type_of(schema)
        subject, low, high = (part.compile(schema, context) for part in (self.subject, self.low, self.high))
        negated = self.negated

        def between(row: Row) -> bool:
            value, lower, upper = subject(row), low(row), high(row)
            if value is None or lower is None or upper is None:
                return False
            if isinstance(upper, timedelta) and isinstance(lower, datetime):
                upper = lower + upper  # datetime(..) .. 1h: a range of that length
            return (lower <= value <= upper) != negated

        return between

    def columns(self) -> set[str]:
        return self.subject.columns() | self.low.columns() | self.high.columns()


@dataclass
class Call(Expr):
    name: str
    args: list[Expr]
    token: Token

    def _function(self) -> ScalarFunction:
        function = SCALAR_FUNCTIONS.get(self.name)
        if function is None:
            if self.name in AGGREGATES:
                raise semantic_error(f"Aggregate function '{self.name}()' is only allowed in 'summarize'")
            raise semantic_error(f"Unknown function '{self.name}' (see KQL.md for the supported subset)")
        if not function.min_args <= len(self.args) <= function.max_args:
            raise semantic_error(
                f"Function '{self.name}' expects {function.min_args}"
                f"{'' if function.min_args == function.max_args else f'..{function.max_args}'} argument(s),"
                f" got {len(self.args)}"
            )
        return function

    def type_of(self, schema: dict[str, str]) -> str:
        function = self._function()
        return function.result_type([arg.type_of(schema) for arg in self.args])

    def compile(self, schema: dict[str, str], context: Context) -> Evaluator:
        function = self._function()
        self.type_of(schema)
        args = [arg.compile(schema, context) for arg in self.args]
        return function.build(args, context)

    def columns(self) -> set[str]:
        return set().union(*(arg.columns() for arg in self.args)) if self.args else set()

    def default_name(self) -> str | None:
        if self.name in ("bin", "floor") and self.args:
            return self.args[0].default_name()
        return None


# ---------------------------------------------------------------------------------------------
# Scalar functions
# ---------------------------------------------------------------------------------------------


@dataclass
class ScalarFunction:
    min_args: int
    max_args: int
    result_type: Callable[[list[str]], str]
    build: Callable[[list[Evaluator], Context], Evaluator]


def _fixed(kind: str) -> Callable[[list[str]], str]:
    return lambda types: kind


def _bin(value: Any, size: Any) -> Any:
    if value is None or size is None:
        return None
    if isinstance(value, datetime):
        step = size.total_seconds()
        if step <= 0:
            return None
        offset = math.floor((value - EPOCH).total_seconds() / step) * step
        return EPOCH + timedelta(seconds=offset)
    if isinstance(value, timedelta):
        step = size.total_seconds()
        return timedelta(seconds=math.floor(value.total_seconds() / step) * step) if step > 0 else None
    if not size:
        return None
    result = math.floor(value / size) * size
    return int(result) if isinstance(value, int) and isinstance(size, int) else float(result)


def _bin_type(types: list[str]) -> str:
    value, size = types
    if size == TIMESPAN and value in (DATETIME, TIMESPAN):
        return value
    if value in NUMERIC and size in NUMERIC:
        return REAL if REAL in (value, size) else value
    raise semantic_error(f"bin() cannot round a {value} to a {size}")


def _to_number(value: Any, integer: bool) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            number = float(value.strip())
        elif isinstance(value, timedelta):
            number = value.total_seconds() * 1e7  # ticks, as Kusto converts a timespan
        elif isinstance(value, datetime):
            number = (value - EPOCH).total_seconds() * 1e7
        else:
            number = float(value)
    except ValueError:
        return None
    if math.isnan(number):
        return None if integer else number
    return int(number) if integer else number


def _to_string(value: Any) -> str:
    if value is None:
        return ""
    return str(format_value(value, _kind_of_value(value)))


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return LONG
    if isinstance(value, float):
        return REAL
    if isinstance(value, datetime):
        return DATETIME
    if isinstance(value, timedelta):
        return TIMESPAN
    return STRING


def _iff_type(types: list[str]) -> str:
    if types[0] != BOOL:
        raise semantic_error(f"iff() needs a bool condition, got {types[0]}")
    if not _compatible(types[1], types[2]):
        raise semantic_error(f"iff() branches have different types: {types[1]} and {types[2]}")
    return REAL if REAL in types[1:] else types[1]


def _to_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_instant(str(value))
    except TimeSpecError:
        return None


def _round(value: Any, digits: Any = 0) -> Any:
    if value is None:
        return None
    return round(float(value), int(digits or 0))


SCALAR_FUNCTIONS: dict[str, ScalarFunction] = {
    "ago": ScalarFunction(
        1, 1, _fixed(DATETIME), lambda a, ctx: lambda row: None if (s := a[0](row)) is None else ctx.now - s
    ),
    "now": ScalarFunction(
        0, 1, _fixed(DATETIME), lambda a, ctx: lambda row: ctx.now + (a[0](row) if a else timedelta(0))
    ),
    "bin": ScalarFunction(2, 2, _bin_type, lambda a, ctx: lambda row: _bin(a[0](row), a[1](row))),
    "floor": ScalarFunction(2, 2, _bin_type, lambda a, ctx: lambda row: _bin(a[0](row), a[1](row))),
    "tolower": ScalarFunction(1, 1, _fixed(STRING), lambda a, ctx: lambda row: _to_string(a[0](row)).lower()),
    "toupper": ScalarFunction(1, 1, _fixed(STRING), lambda a, ctx: lambda row: _to_string(a[0](row)).upper()),
    "tostring": ScalarFunction(1, 1, _fixed(STRING), lambda a, ctx: lambda row: _to_string(a[0](row))),
    "strlen": ScalarFunction(1, 1, _fixed(LONG), lambda a, ctx: lambda row: len(_to_string(a[0](row)))),
    "strcat": ScalarFunction(
        1, 64, _fixed(STRING), lambda a, ctx: lambda row: "".join(_to_string(f(row)) for f in a)
    ),
    "toint": ScalarFunction(1, 1, _fixed(INT), lambda a, ctx: lambda row: _to_number(a[0](row), True)),
    "tolong": ScalarFunction(1, 1, _fixed(LONG), lambda a, ctx: lambda row: _to_number(a[0](row), True)),
    "todouble": ScalarFunction(1, 1, _fixed(REAL), lambda a, ctx: lambda row: _to_number(a[0](row), False)),
    "toreal": ScalarFunction(1, 1, _fixed(REAL), lambda a, ctx: lambda row: _to_number(a[0](row), False)),
    "isempty": ScalarFunction(1, 1, _fixed(BOOL), lambda a, ctx: lambda row: a[0](row) in (None, "")),
    "isnotempty": ScalarFunction(1, 1, _fixed(BOOL), lambda a, ctx: lambda row: a[0](row) not in (None, "")),
    "isnull": ScalarFunction(1, 1, _fixed(BOOL), lambda a, ctx: lambda row: a[0](row) is None),
    "isnotnull": ScalarFunction(1, 1, _fixed(BOOL), lambda a, ctx: lambda row: a[0](row) is not None),
    "not": ScalarFunction(1, 1, _fixed(BOOL), lambda a, ctx: lambda row: not a[0](row)),
    "iff": ScalarFunction(
        3, 3, _iff_type, lambda a, ctx: lambda row: a[1](row) if a[0](row) else a[2](row)
    ),
    "iif": ScalarFunction(
        3, 3, _iff_type, lambda a, ctx: lambda row: a[1](row) if a[0](row) else a[2](row)
    ),
    "abs": ScalarFunction(
        1, 1, lambda t: t[0], lambda a, ctx: lambda row: None if (v := a[0](row)) is None else abs(v)
    ),
    "todatetime": ScalarFunction(1, 1, _fixed(DATETIME), lambda a, ctx: lambda row: _to_datetime(a[0](row))),
    "round": ScalarFunction(
        1, 2, _fixed(REAL), lambda a, ctx: lambda row: _round(a[0](row), a[1](row) if len(a) > 1 else 0)
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Aggregates (summarize)
# ---------------------------------------------------------------------------------------------


def _percentile(values: list[Any], percent: float) -> Any:
    """Nearest-rank percentile: always a value that occurred (Kusto estimates; this is exact)."""
    if not values:
        return None
    ordered = sorted(values)
    if percent <= 0:
        return ordered[0]
    rank = math.ceil(percent / 100.0 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


@dataclass
class Aggregate:
    """One aggregation in summarize: output column names/types and how to fold a group's rows."""

    function: str
    args: list[Expr]
    alias: str | None
    token: Token
    percents: list[float] = field(default_factory=list)
    aliases: list[str] | None = None  # (p50, p95) = percentiles(x, 50, 95)

    def _check_arity(self, low: int, high: int) -> None:
        if not low <= len(self.args) <= high:
            raise semantic_error(f"Aggregate '{self.function}' expects {low}..{high} argument(s), got {len(self.args)}")

    def outputs(self, schema: dict[str, str]) -> list[tuple[str, str]]:
        function = self.function
        subject = self.args[0].default_name() if self.args else None
        suffix = subject or ""
        if function == "count":
            self._check_arity(0, 0)
            return [(self.alias or "count_", LONG)]
        if function == "countif":
            self._check_arity(1, 1)
            if self.args[0].type_of(schema) != BOOL:
                raise semantic_error("countif() needs a bool predicate")
            return [(self.alias or "countif_", LONG)]
        if function == "dcount":
            self._check_arity(1, 2)
            self.args[0].type_of(schema)
            return [(self.alias or f"dcount_{suffix}", LONG)]
        if function in ("sum", "avg", "min", "max"):
            self._check_arity(1, 1)
            kind = self.args[0].type_of(schema)
            if function in ("sum", "avg") and kind not in NUMERIC and kind != TIMESPAN:
                raise semantic_error(f"{function}() needs a number, got a {kind}")
            result = REAL if function == "avg" and kind in NUMERIC else kind
            return [(self.alias or f"{function}_{suffix}", result)]
        if function in ("sumif", "avgif"):
            self._check_arity(2, 2)
            kind = self.args[0].type_of(schema)
            if kind not in NUMERIC or self.args[1].type_of(schema) != BOOL:
                raise semantic_error(f"{function}() needs a number and a bool predicate")
            return [(self.alias or f"{function}_{suffix}", REAL if function == "avgif" else kind)]
        if function in ("percentile", "percentiles"):
            if function == "percentile":
                self._check_arity(2, 2)
            else:
                self._check_arity(2, 64)
            kind = self.args[0].type_of(schema)
            if kind not in NUMERIC and kind not in (DATETIME, TIMESPAN):
                raise semantic_error(f"{function}() needs a number, datetime or timespan, got a {kind}")
            self.percents = []
            for arg in self.args[1:]:
                if not isinstance(arg, Literal) or arg.kind not in NUMERIC:
                    raise semantic_error(f"{function}() percentages must be number literals")
                self.percents.append(float(arg.value))
            names = [f"percentile_{suffix}_{_percent_name(percent)}" for percent in self.percents]
            if self.aliases is not None:
                if len(self.aliases) != len(names):
                    raise semantic_error(
                        f"{function}() gives {len(names)} column(s) but {len(self.aliases)} name(s) were given"
                    )
                names = list(self.aliases)
            elif self.alias is not None:
                if len(names) > 1:
                    raise semantic_error(
                        "percentiles() with several values needs one name per value: "
                        "(p50, p95) = percentiles(x, 50, 95)"
                    )
                names = [self.alias]
            return [(name, kind) for name in names]
        raise semantic_error(f"Unknown aggregate function '{function}' (see KQL.md for the supported subset)")

    def compile(self, schema: dict[str, str], context: Context) -> Callable[[list[Row]], list[Any]]:
        self.outputs(schema)
        args = [arg.compile(schema, context) for arg in self.args]
        function = self.function
        if function == "count":
            return lambda rows: [len(rows)]
        if function == "countif":
            return lambda rows: [sum(1 for row in rows if args[0](row))]
        if function == "dcount":
            return lambda rows: [len({args[0](row) for row in rows} - {None})]
        if function in ("sum", "avg", "min", "max", "sumif", "avgif"):
            predicate = args[1] if function.endswith("if") else None
            base = function[:-2] if predicate else function

            def fold(rows: list[Row]) -> list[Any]:
                values = [
                    value
                    for row in rows
                    if (predicate is None or predicate(row)) and (value := args[0](row)) is not None
                ]
                if base == "sum":
                    if values and isinstance(values[0], timedelta):
                        return [sum(values, timedelta(0))]
                    return [sum(values) if values else (0 if function == "sum" else None)]
                if not values:
                    return [None]
                if base == "avg":
                    if isinstance(values[0], timedelta):
                        return [sum(values, timedelta(0)) / len(values)]
                    return [math.fsum(values) / len(values)]
                return [min(values) if base == "min" else max(values)]

            return fold
        percents = list(self.percents)

        def percentiles(rows: list[Row]) -> list[Any]:
            values = [value for row in rows if (value := args[0](row)) is not None]
            return [_percentile(values, percent) for percent in percents]

        return percentiles


def _percent_name(percent: float) -> str:
    return str(int(percent)) if float(percent).is_integer() else str(percent).replace(".", "_")


AGGREGATES = {
    "count",
    "countif",
    "dcount",
    "sum",
    "avg",
    "min",
    "max",
    "sumif",
    "avgif",
    "percentile",
    "percentiles",
}


# ============================================================================================
# Tabular operators
# ============================================================================================


@dataclass
class Table:
    """A tabular value: ordered columns with types, and rows."""

    columns: list[tuple[str, str]]
    rows: list[Row]

    @property
    def schema(self) -> dict[str, str]:
        return dict(self.columns)


class Operator:
    name = ""

    def apply(self, table: Table, context: Context) -> Table:
        raise NotImplementedError

    def referenced_columns(self) -> set[str]:
        return set()

    def narrows_columns(self) -> bool:
        """True when columns not referenced so far cannot reach the answer."""
        return False


@dataclass
class Where(Operator):
    predicate: Expr
    name = "where"

    def apply(self, table: Table, context: Context) -> Table:
        schema = table.schema
        with _operator("where"):
            if self.predicate.type_of(schema) != BOOL:
                raise semantic_error("'where' needs a bool predicate")
            test = self.predicate.compile(schema, context)
        return Table(table.columns, [row for row in table.rows if test(row)])

    def referenced_columns(self) -> set[str]:
        return self.predicate.columns()


@dataclass
class Assignment:
    name: str | None
    expr: Expr
    token: Token

    def output_name(self, position: int) -> str:
        return self.name or self.expr.default_name() or f"Column{position}"


@dataclass
class Extend(Operator):
    items: list[Assignment]
    name = "extend"

    def apply(self, table: Table, context: Context) -> Table:
        columns = list(table.columns)
        rows = [dict(row) for row in table.rows]
        for position, item in enumerate(self.items, start=1):
            schema = dict(columns)
            with _operator("extend"):
                kind = item.expr.type_of(schema)
                evaluate = item.expr.compile(schema, context)
            name = item.output_name(position)
            columns = [column for column in columns if column[0] != name] + [(name, kind)]
            for row in rows:
                row[name] = evaluate(row)
        return Table(columns, rows)

    def referenced_columns(self) -> set[str]:
        return set().union(*(item.expr.columns() for item in self.items))


@dataclass
class Project(Operator):
    items: list[Assignment]
    name = "project"

    def apply(self, table: Table, context: Context) -> Table:
        schema = table.schema
        outputs: list[tuple[str, str, Evaluator]] = []
        for position, item in enumerate(self.items, start=1):
            with _operator("project"):
                kind = item.expr.type_of(schema)
                outputs.append((item.output_name(position), kind, item.expr.compile(schema, context)))
        names = [name for name, _, _ in outputs]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise semantic_error(f"'project': column name(s) {sorted(duplicates)} appear more than once")
        rows = [{name: evaluate(row) for name, _, evaluate in outputs} for row in table.rows]
        return Table([(name, kind) for name, kind, _ in outputs], rows)

    def referenced_columns(self) -> set[str]:
        return set().union(*(item.expr.columns() for item in self.items))

    def narrows_columns(self) -> bool:
        return True


@dataclass
class ProjectAway(Operator):
    names: list[Token]
    name = "project-away"

    def apply(self, table: Table, context: Context) -> Table:
        drop = set()
        for token in self.names:
            if token.value not in table.schema:
                raise semantic_error(f"'project-away': {_unknown_name(token.value, table.schema)}")
            drop.add(token.value)
        columns = [column for column in table.columns if column[0] not in drop]
        return Table(columns, [{k: v for k, v in row.items() if k not in drop} for row in table.rows])


@dataclass
class Summarize(Operator):
    aggregates: list[Aggregate]
    groups: list[Assignment]
    name = "summarize"

    def apply(self, table: Table, context: Context) -> Table:
        schema = table.schema
        with _operator("summarize"):
            group_outputs: list[tuple[str, str, Evaluator]] = []
            for position, group in enumerate(self.groups, start=1):
                kind = group.expr.type_of(schema)
                group_outputs.append((group.output_name(position), kind, group.expr.compile(schema, context)))
            aggregate_columns: list[tuple[str, str]] = []
            folds = []
            for aggregate in self.aggregates:
                aggregate_columns.extend(aggregate.outputs(schema))
                folds.append(aggregate.compile(schema, context))
        columns = [(name, kind) for name, kind, _ in group_outputs] + aggregate_columns
        names = [name for name, _ in columns]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise semantic_error(f"'summarize': column name(s) {sorted(duplicates)} appear more than once")
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for row in table.rows:
            key = tuple(evaluate(row) for _, _, evaluate in group_outputs)
            groups.setdefault(key, []).append(row)
        if not group_outputs and not groups:
            groups[()] = []  # summarize without 'by' always answers one row
        rows: list[Row] = []
        for key, members in groups.items():
            values: list[Any] = list(key)
            for fold in folds:
                values.extend(fold(members))
            rows.append(dict(zip(names, values, strict=True)))
        return Table(columns, rows)

    def referenced_columns(self) -> set[str]:
        referenced: set[str] = set()
        for aggregate in self.aggregates:
            for arg in aggregate.args:
                referenced |= arg.columns()
        for group in self.groups:
            referenced |= group.expr.columns()
        return referenced

    def narrows_columns(self) -> bool:
        return True


@dataclass
class SortKey:
    expr: Expr
    descending: bool
    nulls_first: bool


@dataclass
class Sort(Operator):
    keys: list[SortKey]
    name = "order by"

    def apply(self, table: Table, context: Context) -> Table:
        schema = table.schema
        rows = list(table.rows)
        with _operator("order by"):
            compiled = [(key, key.expr.compile(schema, context)) for key in self.keys]
        for key, evaluate in reversed(compiled):  # stable sorts, least significant key first
            present = [row for row in rows if evaluate(row) is not None]
            missing = [row for row in rows if evaluate(row) is None]
            present.sort(key=evaluate, reverse=key.descending)
            rows = missing + present if key.nulls_first else present + missing
        return Table(table.columns, rows)

    def referenced_columns(self) -> set[str]:
        return set().union(*(key.expr.columns() for key in self.keys))


@dataclass
class Take(Operator):
    count: int
    name = "take"

    def apply(self, table: Table, context: Context) -> Table:
        return Table(table.columns, table.rows[: self.count])


@dataclass
class Top(Operator):
    count: int
    key: SortKey
    name = "top"

    def apply(self, table: Table, context: Context) -> Table:
        return Take(self.count).apply(Sort([self.key]).apply(table, context), context)

    def referenced_columns(self) -> set[str]:
        return self.key.expr.columns()


@dataclass
class Count(Operator):
    name = "count"

    def apply(self, table: Table, context: Context) -> Table:
        return Table([("Count", LONG)], [{"Count": len(table.rows)}])

    def narrows_columns(self) -> bool:
        return True


@dataclass
class Distinct(Operator):
    items: list[Assignment]
    name = "distinct"

    def apply(self, table: Table, context: Context) -> Table:
        projected = Project(self.items).apply(table, context)
        seen: dict[tuple[Any, ...], Row] = {}
        for row in projected.rows:
            seen.setdefault(tuple(row.values()), row)
        return Table(projected.columns, list(seen.values()))

    def referenced_columns(self) -> set[str]:
        return set().union(*(item.expr.columns() for item in self.items))

    def narrows_columns(self) -> bool:
        return True


class _operator:
    """Prefix semantic errors with the operator they happened in, as Kusto does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        if isinstance(error, LogsQueryError) and error.code == "SemanticError" and not error.message.startswith("'"):
            error.message = f"'{self.name}' operator: {error.message}"
            error.args = (error.message,)


# ============================================================================================
# Parser
# ============================================================================================


@dataclass
class Query:
    table: str
    table_token: Token
    operators: list[Operator]

    def needed_columns(self, all_columns: Iterable[str]) -> set[str]:
        """Columns the source must provide (all of them unless an operator narrows the set)."""
        referenced: set[str] = set()
        for operator in self.operators:
            referenced |= operator.referenced_columns()
            if operator.narrows_columns():
                return referenced
        return set(all_columns)


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    # -- token helpers --
    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at_op(self, *symbols: str) -> bool:
        return self.current.kind == "op" and self.current.value in symbols

    def at_word(self, *words: str) -> bool:
        return self.current.kind == "ident" and self.current.value in words

    def expect_op(self, symbol: str) -> Token:
        if not self.at_op(symbol):
            raise _syntax_error(self.current, f"'{symbol}'")
        return self.advance()

    def expect_word(self, word: str) -> Token:
        if not self.at_word(word):
            raise _syntax_error(self.current, f"'{word}'")
        return self.advance()

    def expect_ident(self, what: str) -> Token:
        if self.current.kind != "ident":
            raise _syntax_error(self.current, what)
        return self.advance()

    # -- query --
    def parse(self) -> Query:
        table_token = self.expect_ident("a table name")
        operators: list[Operator] = []
        while self.at_op("|"):
            self.advance()
            operators.append(self.parse_operator())
        if self.current.kind != "end":
            raise _syntax_error(self.current, "'|' or the end of the query")
        return Query(table_token.value, table_token, operators)

    def parse_operator(self) -> Operator:
        token = self.current
        if token.kind != "ident":
            raise _syntax_error(token, "a tabular operator (where, summarize, project, extend, order by, take, ...)")
        word = token.value
        self.advance()
        if word in ("where", "filter"):
            return Where(self.parse_expression())
        if word == "summarize":
            return self.parse_summarize()
        if word == "project":
            return Project(self.parse_assignments())
        if word == "project-away":
            names = [self.expect_ident("a column name")]
            while self.at_op(","):
                self.advance()
                names.append(self.expect_ident("a column name"))
            return ProjectAway(names)
        if word == "extend":
            return Extend(self.parse_assignments())
        if word in ("order", "sort"):
            self.expect_word("by")
            keys = [self.parse_sort_key()]
            while self.at_op(","):
                self.advance()
                keys.append(self.parse_sort_key())
            return Sort(keys)
        if word in ("take", "limit"):
            return Take(self.parse_count(word))
        if word == "top":
            count = self.parse_count(word)
            self.expect_word("by")
            return Top(count, self.parse_sort_key())
        if word == "count":
            return Count()
        if word == "distinct":
            return Distinct(self.parse_assignments())
        raise _syntax_error(
            token,
            "a supported tabular operator (where, summarize, project, project-away, extend, order by, "
            "sort by, take, limit, top, count, distinct)",
        )

    def parse_count(self, operator: str) -> int:
        token = self.current
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise _syntax_error(token, f"a non-negative whole number after '{operator}'")
        self.advance()
        return int(token.value)

    def parse_sort_key(self) -> SortKey:
        expr = self.parse_expression()
        descending = True  # Kusto sorts descending unless told otherwise
        if self.at_word("asc", "desc"):
            descending = self.advance().value == "desc"
        nulls_first = not descending
        if self.at_word("nulls"):
            self.advance()
            if not self.at_word("first", "last"):
                raise _syntax_error(self.current, "'first' or 'last' after 'nulls'")
            nulls_first = self.advance().value == "first"
        return SortKey(expr, descending, nulls_first)

    def parse_assignments(self) -> list[Assignment]:
        items = [self.parse_assignment()]
        while self.at_op(","):
            self.advance()
            items.append(self.parse_assignment())
        return items

    def parse_assignment(self) -> Assignment:
        token = self.current
        if (
            token.kind == "ident"
            and self.tokens[self.index + 1].kind == "op"
            and self.tokens[self.index + 1].value == "="
        ):
            self.advance()
            self.advance()
            return Assignment(token.value, self.parse_expression(), token)
        return Assignment(None, self.parse_expression(), token)

    def parse_summarize(self) -> Summarize:
        aggregates: list[Aggregate] = []
        if not self.at_word("by"):
            aggregates.append(self.parse_aggregate())
            while self.at_op(","):
                self.advance()
                aggregates.append(self.parse_aggregate())
        groups: list[Assignment] = []
        if self.at_word("by"):
            self.advance()
            groups = self.parse_assignments()
        if not aggregates and not groups:
            raise _syntax_error(self.current, "an aggregation or 'by' after 'summarize'")
        return Summarize(aggregates, groups)

    def parse_aggregate(self) -> Aggregate:
        alias: str | None = None
        aliases: list[str] | None = None
        if self.at_op("("):  # (name1, name2, ...) = percentiles(...)
            self.advance()
            aliases = [self.expect_ident("a column name").value]
            while self.at_op(","):
                self.advance()
                aliases.append(self.expect_ident("a column name").value)
            self.expect_op(")")
            self.expect_op("=")
        token = self.current
        next_token = self.tokens[self.index + 1]
        if token.kind == "ident" and next_token.kind == "op" and next_token.value == "=":
            alias = token.value
            self.advance()
            self.advance()
            token = self.current
        if token.kind != "ident" or not (
            self.tokens[self.index + 1].kind == "op" and self.tokens[self.index + 1].value == "("
        ):
            raise _syntax_error(token, "an aggregation like count(), avg(x), percentiles(x, 50, 95)")
        if token.value not in AGGREGATES:
            raise semantic_error(
                f"'summarize' operator: '{token.value}' is not a supported aggregation function "
                f"({', '.join(sorted(AGGREGATES))})"
            )
        self.advance()
        args = self.parse_call_arguments()
        if aliases is not None and len(aliases) == 1:
            alias, aliases = aliases[0], None
        return Aggregate(token.value, args, alias, token, aliases=aliases)

    def parse_call_arguments(self) -> list[Expr]:
        self.expect_op("(")
        args: list[Expr] = []
        if not self.at_op(")"):
            args.append(self.parse_expression())
            while self.at_op(","):
                self.advance()
                args.append(self.parse_expression())
        self.expect_op(")")
        return args

    # -- expressions, lowest precedence first --
    def parse_expression(self) -> Expr:
        return self.parse_or()

    def parse_or(self) -> Expr:
        left = self.parse_and()
        while self.at_word("or"):
            token = self.advance()
            left = Binary("or", left, self.parse_and(), token)
        return left

    def parse_and(self) -> Expr:
        left = self.parse_comparison()
        while self.at_word("and"):
            token = self.advance()
            left = Binary("and", left, self.parse_comparison(), token)
        return left

    def parse_comparison(self) -> Expr:
        left = self.parse_additive()
        token = self.current
        if self.at_op("==", "!=", "<", "<=", ">", ">=", "=~", "!~"):
            self.advance()
            return Binary(token.value, left, self.parse_additive(), token)
        if self.at_word("contains", "contains_cs", "has", "has_cs", "startswith", "endswith") or (
            token.kind == "op" and token.value.lstrip("!") in _STRING_PREDICATES
        ):
            self.advance()
            return Binary(token.value, left, self.parse_additive(), token)
        if self.at_word("in", "in~") or self.at_op("!in", "!in~"):
            self.advance()
            op = token.value
            self.expect_op("(")
            items = [self.parse_additive()]
            while self.at_op(","):
                self.advance()
                items.append(self.parse_additive())
            self.expect_op(")")
            return InList(left, items, op.startswith("!"), op.endswith("~"))
        if self.at_word("between") or self.at_op("!between"):
            self.advance()
            self.expect_op("(")
            low = self.parse_additive()
            self.expect_op("..")
            high = self.parse_additive()
            self.expect_op(")")
            return Between(left, low, high, token.value.startswith("!"))
        return left

    def parse_additive(self) -> Expr:
        left = self.parse_multiplicative()
        while self.at_op("+", "-"):
            token = self.advance()
            left = Binary(token.value, left, self.parse_multiplicative(), token)
        return left

    def parse_multiplicative(self) -> Expr:
        left = self.parse_unary()
        while self.at_op("*", "/", "%"):
            token = self.advance()
            left = Binary(token.value, left, self.parse_unary(), token)
        return left

    def parse_unary(self) -> Expr:
        if self.at_op("-"):
            token = self.advance()
            operand = self.parse_unary()
            if isinstance(operand, Literal) and operand.kind in (LONG, REAL, TIMESPAN):
                return Literal(-operand.value, operand.kind)
            return Unary("-", operand, token)
        if self.at_op("+"):
            self.advance()
            return self.parse_unary()
        return self.parse_primary()

    def parse_primary(self) -> Expr:
        token = self.current
        if token.kind == "number":
            self.advance()
            return Literal(token.value, REAL if isinstance(token.value, float) else LONG)
        if token.kind == "string":
            self.advance()
            return Literal(token.value, STRING)
        if token.kind == "timespan":
            self.advance()
            return Literal(token.value, TIMESPAN)
        if token.kind == "datetime":
            self.advance()
            return Literal(token.value, DATETIME)
        if token.kind == "op" and token.value == "(":
            self.advance()
            inner = self.parse_expression()
            self.expect_op(")")
            return inner
        if token.kind == "ident":
            word = token.value
            if word in ("true", "false"):
                self.advance()
                return Literal(word == "true", BOOL)
            next_token = self.tokens[self.index + 1]
            if next_token.kind == "op" and next_token.value == "(":
                self.advance()
                return Call(word, self.parse_call_arguments(), token)
            self.advance()
            return Column(word, token)
        raise _syntax_error(token, "a column, a literal, a function call or '('")


def parse(text: str) -> Query:
    if not text or not text.strip():
        raise LogsQueryError("SyntaxError", "The query is empty")
    return Parser(text).parse()


# ============================================================================================
# Running a query, and the Log Analytics answer shape
# ============================================================================================


def run(query: Query, source: Table, now: datetime) -> Table:
    context = Context(now=now)
    table = source
    for operator in query.operators:
        table = operator.apply(table, context)
    return table


def format_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == DATETIME and isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return text + "Z"
    if kind == TIMESPAN and isinstance(value, timedelta):
        total = value.total_seconds()
        sign = "-" if total < 0 else ""
        total = abs(total)
        days, rest = divmod(total, 86_400)
        hours, rest = divmod(rest, 3_600)
        minutes, seconds = divmod(rest, 60)
        whole = int(seconds)
        fraction = round((seconds - whole) * 1e7)
        text = f"{sign}{int(days)}." if days else sign
        text += f"{int(hours):02d}:{int(minutes):02d}:{whole:02d}"
        return text + (f".{fraction:07d}" if fraction else "")
    if kind == REAL:
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return number
    if kind in (LONG, INT):
        return int(value)
    if kind == BOOL:
        return bool(value)
    return value


def answer(table: Table) -> dict[str, Any]:
    return {
        "tables": [
            {
                "name": "PrimaryResult",
                "columns": [{"name": name, "type": kind} for name, kind in table.columns],
                "rows": [[format_value(row.get(name), kind) for name, kind in table.columns] for row in table.rows],
            }
        ]
    }


def time_bounds(query: Query, time_column: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Bounds on `time_column` implied by the leading where operators (to narrow the scan).

    Only constant comparisons are used: `T >= ago(1h)`, `T between (datetime(..) .. datetime(..))`
    and the like, joined by `and`. The full predicate is still evaluated on every row.
    """
    lower: datetime | None = None
    upper: datetime | None = None
    context = Context(now=now)

    def constant(expr: Expr) -> datetime | None:
        if expr.columns():
            return None
        try:
            value = expr.compile({}, context)({})
        except LogsQueryError:
            return None
        return value if isinstance(value, datetime) else None

    def visit(expr: Expr) -> None:
        nonlocal lower, upper
        if isinstance(expr, Binary) and expr.op == "and":
            visit(expr.left)
            visit(expr.right)
            return
        if isinstance(expr, Binary) and isinstance(expr.left, Column) and expr.left.name == time_column:
            bound = constant(expr.right)
            if bound is None:
                return
            if expr.op in (">", ">=", "=="):
                lower = bound if lower is None else max(lower, bound)
            if expr.op in ("<", "<=", "=="):
                upper = bound if upper is None else min(upper, bound)
        if (
            isinstance(expr, Between)
            and not expr.negated
            and isinstance(expr.subject, Column)
            and expr.subject.name == time_column
        ):
            low = constant(expr.low)
            if low is None:
                return
            high_expr = expr.high
            high: datetime | None
            if not high_expr.columns():
                try:
                    value = high_expr.compile({}, context)({})
                except LogsQueryError:
                    return
                high = low + value if isinstance(value, timedelta) else value if isinstance(value, datetime) else None
            else:
                high = None
            lower = low if lower is None else max(lower, low)
            if high is not None:
                upper = high if upper is None else min(upper, high)

    for operator in query.operators:
        if not isinstance(operator, Where):
            break
        visit(operator.predicate)
    return lower, upper


__all__: Sequence[str] = (
    "LogsQueryError",
    "Query",
    "Table",
    "answer",
    "format_value",
    "parse",
    "run",
    "time_bounds",
    "tokenize",
)
