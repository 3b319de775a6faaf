"""Dimensions of a layer: TIME, ELEVATION and custom ones (WMS ``DIM_<NAME>``), their
allowed values, the one spelling of each value, and the key segments that hold them.

A :class:`Dimension` has a name (``time``, ``elevation`` or a custom name), a domain of
allowed values and a default, which is one of them. A domain is

- a list of values: ISO 8601 times (``time``, or any dimension whose values all look
  like dates), numbers, or words (letters, digits and ``._+-``);
- an interval ``start/end/period`` of ISO 8601 times stepped by an ISO 8601 duration
  (``P1M`` and ``P1Y`` step the calendar; ``P7D``, ``PT6H`` a fixed length), or of
  numbers ``min/max/step``. Its values are ``start + k * period`` up to ``end``.

**One spelling per value.** Times are ``YYYY-MM-DD`` when every declared time is a
date, else ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (a time without an offset is UTC); numbers
are written without exponent, ``+`` or trailing zeros (``100``, ``-2.5``); words as
declared. :meth:`Dimension.canonical` turns any spelling of an allowed value into that
one: the routes that build a key (WMTS REST and KVP) use it. :meth:`Dimension.key_value`
accepts only that spelling: a key names the object it is stored under, two spellings
would be two caches of one map, and a redirected miss is stored under exactly the key
that missed.

**Keys.** A layer with dimensions stores the tiles of each combination of values
under ``{prefix}{value}/.../{layout path}``: one segment per dimension, in the order
declared, between the prefix and the layout's own path
(``tiles/2024-03-01/5/17/11.png``, ``esri/2024-03-01/L05/R0000000b/C00000011.png``).
Right after the prefix, because an S3 redirect rule on the prefix then catches every
value, one listing of ``{prefix}{value}/`` is one value's cache (purge, seeding's
``--skip-existing``), and every layout keeps its path. A key has every segment or
none: without them it is the layer's *dimension-less* key, drawn with every default
(what TMS, ArcGIS and XYZ clients, which cannot name a value, ask for). That is
unambiguous: values never hold a ``/``, so the two readings differ in their number
of segments, and a default is always one declared value, never "current".

About 440 lines in one module on purpose: what a value is (the three kinds), which
values a declaration allows (lists and intervals) and how a declaration is read are
one fact; a reader of the declarations would otherwise reach into the domains.

>>> dims = parse_dimensions({"time": {"values": "2024-01-01/2024-12-01/P1M",
...                                   "default": "2024-12-01"}})
>>> dims[0].canonical("2024-03-01T00:00:00Z"), dims[0].identifier, dims[0].wms_param
('2024-03-01', 'Time', 'TIME')
>>> split_values("2024-03-01/5/17/11.png", 1)
(('2024-03-01',), '5/17/11.png')
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

__all__ = [
    "LISTED_VALUES",
    "Dimension",
    "DimensionError",
    "parse_dimensions",
    "select_values",
    "split_values",
    "values_path",
    "wms_params",
]

#: An interval of more values than this is written as ``start/end/period`` in the
#: WMTS capabilities instead of value by value.
LISTED_VALUES = 1000

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# WMTS template variables and KVP keys: a dimension of that name would be read as them.
_RESERVED = frozenset(
    {"style", "tilematrixset", "tilematrix", "tilerow", "tilecol", "layer", "format"}
    | {"service", "request", "version"}
)
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_NUMBER_RE = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")
_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERIOD_RE = re.compile(
    r"P(?:([0-9]{1,4})Y)?(?:([0-9]{1,4})M)?(?:([0-9]{1,4})W)?(?:([0-9]{1,5})D)?"
    r"(?:T(?:([0-9]{1,6})H)?(?:([0-9]{1,6})M)?(?:([0-9]{1,8})S)?)?"
)
_MAX_TEXT = 64


class DimensionError(ValueError):
    """A dimension or value that is not allowed; the message is one line."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- kinds


class _Kind(Protocol):
    def parse(self, text: str) -> Any: ...
    def text(self, value: Any) -> str: ...


@dataclass(frozen=True)
class _Times:
    """ISO 8601 instants, compared in UTC; written as dates when `dates`."""

    dates: bool

    def parse(self, text: str) -> datetime:
        try:
            if not _TIME_RE.fullmatch(text):
                raise ValueError
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{_show(text)} is not an ISO 8601 date or time") from None
        if instant.tzinfo is None:
            return instant.replace(tzinfo=UTC)
        return instant.astimezone(UTC)

    def text(self, value: datetime) -> str:
        if self.dates and value.time() == datetime.min.time():
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Numbers:
    def parse(self, text: str) -> Decimal:
        if not _NUMBER_RE.fullmatch(text):
            raise ValueError(f"{_show(text)} is not a number such as 100 or -2.5")
        return Decimal(text)

    def text(self, value: Decimal) -> str:
        text = format(value.normalize(), "f")
        return "0" if text == "-0" else text


@dataclass(frozen=True)
class _Words:
    def parse(self, text: str) -> str:
        if not _WORD_RE.fullmatch(text):
            raise ValueError(f"{_show(text)} is not 1-64 letters, digits and ._+-")
        return text

    def text(self, value: str) -> str:
        return value


# --------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class _List:
    """Declared values, in their declared order."""

    kind: _Kind
    values: tuple[str, ...]  # canonical

    def canonical(self, text: str) -> str:
        value = self.kind.text(self.kind.parse(text))
        if value not in self.values:
            raise ValueError(f"{_show(text)} is not one of its values")
        return value

    def between(self, low: str, high: str) -> list[str]:
        if isinstance(self.kind, _Words):  # words: the declared order
            first = self.values.index(self.canonical(low))
            return list(self.values[first : self.values.index(self.canonical(high)) + 1])
        lowest, highest = self.kind.parse(low), self.kind.parse(high)
        inside = [v for v in self.values if lowest <= self.kind.parse(v) <= highest]
        return sorted(inside, key=self.kind.parse)

    def listed(self) -> tuple[str, ...]:
        return self.values

    def bounds(self) -> tuple[str, str]:
        if isinstance(self.kind, _Words):  # words: the declared order
            return self.values[0], self.values[-1]
        ordered = sorted(self.values, key=self.kind.parse)
        return ordered[0], ordered[-1]

    def describe(self) -> str:
        text = ", ".join(self.values)
        return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class _Interval:
    """``start + k * step`` up to ``end``: `months` steps the calendar, else `step`."""

    kind: _Kind
    start: Any
    end: Any
    step: Any  # timedelta or Decimal; None when `months` steps
    months: int
    spelled: str  # the interval as the capabilities write it
    count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", self._floor(self.end) + 1)

    def value_at(self, k: int) -> Any:
        if self.months:
            year, month = divmod(self.start.month - 1 + k * self.months, 12)
            return self.start.replace(year=self.start.year + year, month=month + 1)
        return self.start + k * self.step

    def _floor(self, value: Any) -> int:
        """The last k whose value is at most `value` (which is at least `start`)."""
        if not self.months:
            return int((value - self.start) // self.step)
        elapsed = (value.year - self.start.year) * 12 + value.month - self.start.month
        k = elapsed // self.months
        return k - 1 if self.value_at(k) > value else k

    def canonical(self, text: str) -> str:
        value = self.kind.parse(text)
        if not self.start <= value <= self.end or self.value_at(self._floor(value)) != value:
            raise ValueError(f"{_show(text)} is not one of its values")
        return self.kind.text(value)

    def between(self, low: str, high: str) -> list[str]:
        lowest = max(self.kind.parse(low), self.start)
        highest = min(self.kind.parse(high), self.end)
        if lowest > highest:
            return []
        first = self._floor(lowest)
        first += self.value_at(first) < lowest
        return [self.kind.text(self.value_at(k)) for k in range(first, self._floor(highest) + 1)]

    def listed(self) -> tuple[str, ...]:
        return self._listed

    @functools.cached_property
    def _listed(self) -> tuple[str, ...]:  # documents ask on every request: once
        if self.count > LISTED_VALUES:
            return (self.spelled,)
        return tuple(self.kind.text(self.value_at(k)) for k in range(self.count))

    def bounds(self) -> tuple[str, str]:
        return self.kind.text(self.start), self.kind.text(self.value_at(self.count - 1))

    def describe(self) -> str:
        return self.spelled


# --------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Dimension:
    """One dimension of a layer: its name, allowed values and default (canonical)."""

    name: str  # lower case: "time", "elevation" or a custom name
    domain: _List | _Interval = field(repr=False)
    default: str

    @property
    def identifier(self) -> str:
        """The WMTS ``ows:Identifier`` and ResourceURL template variable (``{Time}``)."""
        return {"time": "Time", "elevation": "Elevation"}.get(self.name, self.name)

    @property
    def wms_param(self) -> str:
        """The GetMap parameter: ``TIME``, ``ELEVATION`` or ``DIM_<NAME>`` (WMS 1.1.1
        Annex C, 1.3.0 Annex C)."""
        if self.name in ("time", "elevation"):
            return self.name.upper()
        return f"DIM_{self.name.upper()}"

    def canonical(self, text: Any) -> str:
        """The one spelling of an allowed value given in any spelling; DimensionError
        for anything that is not an allowed value."""
        if not isinstance(text, str) or not 0 < len(text) <= _MAX_TEXT:
            raise DimensionError(f"{self.identifier} {_show(text)} is not a value")
        try:
            return self.domain.canonical(text)
        except ValueError as exc:
            raise DimensionError(f"{self.identifier} {exc} ({self.domain.describe()})") from None

    def key_value(self, text: str) -> str:
        """`text` when it is an allowed value in its one spelling: what a key may hold."""
        value = self.canonical(text)
        if value != text:
            raise DimensionError(f"{self.identifier} {_show(text)} is spelt {value!r} in keys")
        return value

    def select(self, spec: str) -> list[str]:
        """The values one value (``2024-01-01``) or an inclusive range
        (``2024-01-01/2024-03-01``) selects, in order; DimensionError when none."""
        low, sep, high = spec.partition("/")
        if not sep:
            return [self.canonical(spec)]
        try:
            chosen = self.domain.between(low, high)
        except ValueError as exc:
            raise DimensionError(f"{self.identifier} {exc}") from None
        if not chosen:
            raise DimensionError(
                f"{self.identifier} {_show(spec)} selects none of ({self.domain.describe()})"
            )
        return chosen

    def listed(self) -> tuple[str, ...]:
        """The values as the WMTS capabilities list them (an interval of more than
        :data:`LISTED_VALUES` values as ``start/end/period``)."""
        return self.domain.listed()

    def bounds(self) -> tuple[str, str]:
        """The first and the last value (declared order for words), in their spelling."""
        return self.domain.bounds()


def split_values(path: str, count: int) -> tuple[tuple[str, ...] | None, str]:
    """The first `count` segments of a key path, and the rest; (None, path) when the
    path has no room for them (a dimension-less key)."""
    parts = path.split("/", count)
    if len(parts) <= count:
        return None, path
    return tuple(parts[:count]), parts[count]


def values_path(values: Sequence[str]) -> str:
    """The key segments of `values`: ``"2024-03-01/"``."""
    return "".join(f"{value}/" for value in values)


def wms_params(dimensions: Sequence[Dimension], values: Sequence[str] | None) -> tuple:
    """The GetMap parameters of `values` (None: the defaults), as (key, value) pairs."""
    chosen = values if values is not None else [d.default for d in dimensions]
    return tuple((d.wms_param, value) for d, value in zip(dimensions, chosen, strict=True))


def select_values(dimensions: Sequence[Dimension], specs: Sequence[str]) -> list[tuple[str, ...]]:
    """The value combinations ``NAME=VALUE`` or ``NAME=START/END`` specs select, every
    dimension not named at its default. No specs: ``[()]``, the dimension-less keys."""
    if not specs:
        return [()]
    if not dimensions:
        raise DimensionError("the layer has no dimensions")
    by_name = {d.name: d for d in dimensions}
    chosen: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        dimension = by_name.get(name.strip().lower())
        if not sep or dimension is None:
            raise DimensionError(
                f"{_show(spec)}: expected NAME=VALUE or NAME=START/END, NAME one of "
                + ", ".join(by_name)
            )
        if dimension.name in chosen:
            raise DimensionError(f"{dimension.name} is given twice")
        chosen[dimension.name] = dimension.select(value.strip())
    return list(itertools.product(*(chosen.get(d.name, [d.default]) for d in dimensions)))


# --------------------------------------------------------------------------- parsing


def parse_dimensions(table: Any) -> tuple[Dimension, ...]:
    """Dimensions from ``{name: {"values": ..., "default": ...}}`` (a layers-file
    table, or the JSON of ``DIMENSIONS``), in order; ValueError naming the part."""
    if not isinstance(table, Mapping) or not table:
        raise ValueError("expected a table {name = {values = ..., default = ...}}")
    dimensions = []
    for raw_name, spec in table.items():
        name = str(raw_name).lower()
        if not _NAME_RE.fullmatch(name) or name in _RESERVED:
            raise ValueError(f"{_show(raw_name)}: a name of letters, digits and _, not a WMTS key")
        if any(d.name == name for d in dimensions):
            raise ValueError(f"{name}: declared twice")
        dimensions.append(_dimension(name, spec))
    return tuple(dimensions)


def _dimension(name: str, spec: Any) -> Dimension:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name}: expected a table with values and default")
    unknown = set(spec) - {"values", "default"}
    if unknown:
        raise ValueError(f"{name}.{sorted(unknown)[0]}: unknown key")
    for key in ("values", "default"):
        if key not in spec:
            raise ValueError(f"{name}.{key}: missing")
    try:
        domain = _domain(name, spec["values"])
    except (ValueError, InvalidOperation, OverflowError) as exc:
        raise ValueError(f"{name}.values: {exc}") from None
    dimension = Dimension(name, domain, "")
    try:
        default = dimension.canonical(_text(spec["default"]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}.default: {exc}") from None
    return Dimension(name, domain, default)


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{_show(value)} is not a value")
    return value if isinstance(value, str) else str(value)


def _domain(name: str, values: Any) -> _List | _Interval:
    if isinstance(values, str):
        return _interval(name, values)
    if not isinstance(values, list) or not values:
        raise ValueError('expected a list of values, or an interval "start/end/period"')
    texts = [_text(v) for v in values]
    times = all(_TIME_RE.fullmatch(t) for t in texts)
    if name == "time" and not times:
        raise ValueError("time values are ISO 8601 dates or times, such as 2024-01-31")
    if times:
        kind: _Kind = _Times(dates=all(_DATE_RE.fullmatch(t) for t in texts))
    elif all(_NUMBER_RE.fullmatch(t) for t in texts):
        kind = _Numbers()
    else:
        kind = _Words()
    canonical = tuple(kind.text(kind.parse(t)) for t in texts)
    if len(set(canonical)) != len(canonical):
        raise ValueError("a value is listed twice")
    return _List(kind, canonical)


def _interval(name: str, spelled: str) -> _Interval:
    parts = spelled.split("/")
    if len(parts) != 3:
        raise ValueError(f'{_show(spelled)} is not "start/end/period"')
    start, end, period = parts
    if _TIME_RE.fullmatch(start):
        match = _PERIOD_RE.fullmatch(period)
        if match is None or period in ("P", "PT") or period.endswith("T"):
            raise ValueError(f"{_show(period)} is not an ISO 8601 period such as P1M or PT6H")
        years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        fixed = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        months += 12 * years
        if bool(months) == bool(fixed):
            raise ValueError(f"period {period}: either years and months, or weeks to seconds")
        dates = bool(_DATE_RE.fullmatch(start) and _DATE_RE.fullmatch(end))
        kind: _Kind = _Times(dates=dates and "T" not in period)
        first, last = kind.parse(start), kind.parse(end)
        if months and first.day > 28:
            raise ValueError("a period of months needs a start on day 1 to 28")
        step: Any = fixed or None
        step_text = period
    elif name == "time":
        raise ValueError("time values are ISO 8601 dates or times, such as 2024-01-31")
    else:
        kind, months = _Numbers(), 0
        first, last, step = (kind.parse(part) for part in parts)
        if step <= 0:
            raise ValueError(f"step {period} is not above 0")
        step_text = kind.text(step)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    text = f"{kind.text(first)}/{kind.text(last)}/{step_text}"
    return _Interval(kind, first, last, step, months, text)
