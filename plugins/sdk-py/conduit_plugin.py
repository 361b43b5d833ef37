"""The Python helper of the Conduit plugin SDK (componentize-py), for the
conduit:plugin@1.1.0 contract: typed values, output builders, strict settings, `log`, and
errors that keep their message. `conduit plugin new --lang python` writes it next to the
plugin's `app.py`.

    import wit_world
    from conduit_plugin import Batch, Output, errors_as_results, host_settings, own_settings

    @errors_as_results
    class WitWorld(wit_world.WitWorld):
        def configure(self, settings: str) -> None: ...
        def map(self, phase, batch): ...

WIT shapes in componentize-py: the types are dataclasses in `wit_world.imports.types`
(`Value_Text("x")`, `Outcome_Skip("why")`, `Operation.UPSERT`); record fields are snake_case.
"""

import functools
import json

from componentize_py_types import Err
from wit_world.imports import log as _wit_log
from wit_world.imports import types as t

SDK_VERSION = "1.1.0"
"""The SDK version this helper belongs to (the contract's version)."""

# --------------------------------------------------------------------------------------------
# Errors


def _describe(error: BaseException) -> str:
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def errors_as_results(cls):
    """Class decorator: whatever `configure`, `map` or `resolve` raises becomes the `err`
    string of the WIT result, `<ExceptionName>: <message>` (an `Err` is kept as it is), instead
    of a trap whose message survives only in the plugin's stderr."""
    for name in ("configure", "map", "resolve"):
        method = cls.__dict__.get(name)
        if method is None:
            continue

        def wrap(method):
            @functools.wraps(method)
            def wrapped(*args, **kwargs):
                try:
                    return method(*args, **kwargs)
                except Err:
                    raise
                except Exception as error:  # noqa: BLE001 - every error becomes the result
                    raise Err(_describe(error)) from error

            return wrapped

        setattr(cls, name, wrap(method))
    return cls


# --------------------------------------------------------------------------------------------
# Logging


class log:
    """Writes to the host log, tagged with the plugin's name (rate-limited by the host)."""

    @staticmethod
    def debug(message) -> None:
        _wit_log.log(t.LogLevel.DEBUG, str(message))

    @staticmethod
    def info(message) -> None:
        _wit_log.log(t.LogLevel.INFO, str(message))

    @staticmethod
    def warn(message) -> None:
        _wit_log.log(t.LogLevel.WARN, str(message))

    @staticmethod
    def error(message) -> None:
        _wit_log.log(t.LogLevel.ERROR, str(message))


# --------------------------------------------------------------------------------------------
# Settings

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names it."""


def _given(text: str) -> dict:
    try:
        given = json.loads(text)
    except ValueError as error:
        raise SettingsError(f"invalid settings: not JSON ({error})") from None
    if not isinstance(given, dict):
        raise SettingsError("invalid settings: expected an object")
    return given


def _quoted(names) -> str:
    return ", ".join(f"`{name}`" for name in names)


def own_settings(text: str, spec: dict | None = None) -> dict:
    """The plugin's own `settings` table (`{}` when absent), checked strictly against `spec`:
    `{"name": "string"}` is a required string, `{"name": {"type": "boolean", "default": False}}`
    an optional one (types: string, boolean, number, integer, array, object, any). A key `spec`
    does not name is an error naming it; returns the settings with defaults filled in."""
    spec = spec or {}
    own = _given(text).get("settings", {})
    if not isinstance(own, dict):
        raise SettingsError("invalid setting `settings`: expected a table")
    unknown = [key for key in own if key not in spec]
    if unknown:
        expected = (
            "the plugin takes no settings" if not spec else f"expected {_quoted(spec)}"
        )
        also = f" (also {_quoted(unknown[1:])})" if len(unknown) > 1 else ""
        raise SettingsError(
            f"invalid setting `settings.{unknown[0]}`: unknown setting{also}; {expected}"
        )
    result = {}
    for key, rule in spec.items():
        kind = rule if isinstance(rule, str) else rule["type"]
        check = _TYPES.get(kind)
        if check is None:
            raise SettingsError(f"own_settings: unknown type `{kind}` for `{key}`")
        if key not in own:
            if isinstance(rule, str) or "default" not in rule:
                raise SettingsError(f"invalid setting `settings`: missing field `{key}`")
            result[key] = rule["default"]
        elif not check(own[key]):
            article = "an" if kind in ("integer", "array", "object") else "a"
            raise SettingsError(f"invalid setting `settings.{key}`: expected {article} {kind}")
        else:
            result[key] = own[key]
    return result


def host_settings(text: str) -> dict:
    """The host's keys of what `configure` received (e.g. `destination`, `key`, `fields` for an
    Ingress mapping), without the plugin's own `settings`. Read the keys you need and ignore
    the rest: a newer host may add keys."""
    given = _given(text)
    given.pop("settings", None)
    return given


# --------------------------------------------------------------------------------------------
# Values


class Value:
    """Constructors of the WIT `value` variant."""

    null = staticmethod(lambda: t.Value_Null())
    boolean = staticmethod(lambda b: t.Value_Boolean(bool(b)))
    integer = staticmethod(lambda n: t.Value_Integer(int(n)))
    decimal = staticmethod(lambda x: t.Value_Decimal(float(x)))
    text = staticmethod(lambda s: t.Value_Text(str(s)))
    datetime = staticmethod(lambda s: t.Value_Datetime(str(s)))
    picklist = staticmethod(lambda value, label=None: t.Value_Picklist(t.Picklist(int(value), label)))
    guid = staticmethod(lambda s: t.Value_Guid(str(s)))
    lookup = staticmethod(lambda table, id: t.Value_Lookup(t.Lookup(str(table), str(id))))


_VALUE_TYPES = (
    t.Value_Null,
    t.Value_Boolean,
    t.Value_Integer,
    t.Value_Decimal,
    t.Value_Text,
    t.Value_Datetime,
    t.Value_Picklist,
    t.Value_Guid,
    t.Value_Lookup,
)


def value(v):
    """A WIT value from a plain one: None -> null, bool -> boolean, int -> integer, float ->
    decimal, str -> text; a WIT value is kept as it is."""
    if v is None:
        return t.Value_Null()
    if isinstance(v, _VALUE_TYPES):
        return v
    if isinstance(v, bool):
        return t.Value_Boolean(v)
    if isinstance(v, int):
        return t.Value_Integer(v)
    if isinstance(v, float):
        return t.Value_Decimal(v)
    if isinstance(v, str):
        return t.Value_Text(v)
    raise TypeError(f"cannot make a WIT value of {type(v).__name__}")


def as_text(v):
    """The text of a text, datetime or guid value; else None."""
    if isinstance(v, (t.Value_Text, t.Value_Datetime, t.Value_Guid)):
        return v.value
    return None


def picklist_label(v):
    """A picklist's label, when the source sent one; else None."""
    return v.value.label if isinstance(v, t.Value_Picklist) else None


def as_bool(v):
    """The boolean of a boolean value; else None."""
    return v.value if isinstance(v, t.Value_Boolean) else None


def as_integer(v):
    """The integer of an integer or picklist value; else None."""
    if isinstance(v, t.Value_Integer):
        return v.value
    if isinstance(v, t.Value_Picklist):
        return v.value.value
    return None


def as_decimal(v):
    """The number of a decimal or integer value; else None."""
    if isinstance(v, t.Value_Decimal):
        return v.value
    if isinstance(v, t.Value_Integer):
        return float(v.value)
    return None


def lookup_id(v):
    """The id of a lookup value; else None."""
    return v.value.id if isinstance(v, t.Value_Lookup) else None


def is_null(v) -> bool:
    """Whether the value is null (or missing)."""
    return v is None or isinstance(v, t.Value_Null)


class Batch:
    """A record batch with columns found by name."""

    def __init__(self, batch):
        self.table = batch.table
        self.columns = batch.columns
        self.rows = batch.rows
        self._index = {name: i for i, name in enumerate(batch.columns)}

    def get(self, row, name):
        """The value of column `name` in `row`: null when the batch does not carry it."""
        i = self._index.get(name)
        if i is None or i >= len(row.values):
            return t.Value_Null()
        return row.values[i]


# --------------------------------------------------------------------------------------------
# Outputs

_SYSTEMS = {"campaign": t.System.CAMPAIGN, "dynamics": t.System.DYNAMICS}
_OPERATIONS = {
    "upsert": t.Operation.UPSERT,
    "update": t.Operation.UPDATE,
    "delete": t.Operation.DELETE,
}


class Output:
    """Builds a `mapped-batch`: targets and destination columns are interned (each listed
    once, referred to by index), and one outcome is pushed per input, in input order."""

    def __init__(self):
        self.targets = []
        self.columns = []
        self.outcomes = []
        self._targets = {}
        self._columns = {}

    def target(self, system: str, table: str, key_field: str) -> int:
        """The index of target (`"campaign"` or `"dynamics"`, table, key field), added once."""
        ident = (system, table, key_field)
        if ident not in self._targets:
            if system not in _SYSTEMS:
                raise ValueError(f"unknown system `{system}`: campaign or dynamics")
            self._targets[ident] = len(self.targets)
            self.targets.append(t.Target(_SYSTEMS[system], table, key_field))
        return self._targets[ident]

    def column(self, name: str) -> int:
        """The index of destination column `name`, added once."""
        if name not in self._columns:
            self._columns[name] = len(self.columns)
            self.columns.append(name)
        return self._columns[name]

    def record(self, op: str, target: int, key: str, fields: dict | None = None):
        """An output record: `fields` maps destination column names to values."""
        pairs = [(self.column(name), value(v)) for name, v in (fields or {}).items()]
        return t.OutputRecord(target, str(key), _OPERATIONS[op], pairs)

    def upsert(self, target: int, key: str, fields: dict | None = None):
        """An upsert of `key` on `target`."""
        return self.record("upsert", target, key, fields)

    def update(self, target: int, key: str, fields: dict | None = None):
        """An update of an existing `key` on `target`."""
        return self.record("update", target, key, fields)

    def delete(self, target: int, key: str):
        """A delete of `key` on `target`."""
        return self.record("delete", target, key)

    def write(self, *records) -> None:
        """Outcome: write these records (none: nothing to propagate)."""
        self.outcomes.append(t.Outcome_Write(list(records)))

    def skip(self, reason: str) -> None:
        """Outcome: deliberately not propagated, with the reason."""
        self.outcomes.append(t.Outcome_Skip(str(reason)))

    def reject(self, reason: str) -> None:
        """Outcome: this input cannot be mapped (dead-lettered with the reason)."""
        self.outcomes.append(t.Outcome_Reject(str(reason)))

    def finish(self):
        """The `mapped-batch` to return."""
        return t.MappedBatch(self.targets, self.columns, self.outcomes)
