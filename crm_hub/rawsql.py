"""SQL built once per shape for the agent write path, where the ORM's per-call query building
was most of an intake's time (see bench/agent_write.py).

Rows still become model instances with Django's own converters, inserts still go through
Django's insert compiler (pre_save, get_db_prep_save), so values read and written are the
same as through the ORM. Only the per-call cost of building the SQL goes.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Model


@dataclass(frozen=True)
class ModelColumns:
    """A model's concrete columns, in one order, with what turns a raw value into the attribute."""

    model: type[Model]
    columns: tuple[str, ...]
    attnames: tuple[str, ...]
    converters: tuple[tuple[int, tuple[Any, ...]], ...]
    expressions: tuple[Any, ...]

    def select_list(self, alias: str) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{alias}.{quote(c)}" for c in self.columns)

    def instance(self, values: Sequence[Any]) -> Model:
        values = list(values)
        for index, funcs in self.converters:
            value = values[index]
            for func in funcs:
                value = func(value, self.expressions[index], connection)
            values[index] = value
        return self.model.from_db(connection.alias, self.attnames, values)


@functools.cache
def _columns_for(model: type[Model], vendor: str) -> ModelColumns:
    fields = list(model._meta.concrete_fields)
    expressions = tuple(f.get_col(model._meta.db_table) for f in fields)
    converters = []
    for index, (f, expression) in enumerate(zip(fields, expressions, strict=True)):
        funcs = tuple(connection.ops.get_db_converters(expression) + f.get_db_converters(connection))
        if funcs:
            converters.append((index, funcs))
    return ModelColumns(
        model=model,
        columns=tuple(f.column for f in fields),
        attnames=tuple(f.attname for f in fields),
        converters=tuple(converters),
        expressions=expressions,
    )


def columns(model: type[Model]) -> ModelColumns:
    return _columns_for(model, connection.vendor)


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def fetch(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one of this module's statements and return its rows.

    On PostgreSQL it goes out as a prepared statement: these few statements run on every agent
    call, and planning them each time cost the server more than running them. Behind a pooler
    that cannot keep them (PgBouncer in transaction mode before 1.21), set
    CRM_PREPARED_STATEMENTS=0. The cursor is
    wrapped like Django's own, so query counting, logging and error translation still apply.
    """
    if connection.vendor != "postgresql":
        # Date-times as the ORM stores them: SQLite keeps text, and an aware value went in as
        # "...+00:00" beside the ORM's bare UTC, so text comparison put those rows out of order
        # (a contact an intake touched sorted after its own keyset cursor, and a walk looped).
        params = [connection.ops.adapt_datetimefield_value(p) if isinstance(p, dt.datetime) else p for p in params]
    if connection.vendor != "postgresql" or not settings.CRM_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's preparing off for the connection (prepare_threshold None). Its own
        # client-side-binding cursors never prepare, so only this module's cursors are affected.
        raw.prepare_threshold = 2**31
    with connection.wrap_database_errors:
        cursor = connection._prepare_cursor(_prepared_cursor_class()(raw))
    # Every statement here returns rows (a SELECT, or a WITH ending in one).
    with cursor:
        cursor.execute(_native_placeholders(sql), params)
        return cursor.fetchall()


_PLACEHOLDER = re.compile(r"%(.)", re.DOTALL)


# Bounded: batch inserts come in a shape per row count, up to ~100 kB of SQL each; the few
# shapes of the per-call statements stay in it.
@functools.lru_cache(maxsize=128)
def _native_placeholders(sql: str) -> str:
    """``%s`` placeholders as PostgreSQL's ``$1, $2, ...``, worked out once per statement.

    psycopg re-parses a query for placeholders on every execute unless it is under 4 kB;
    a 100-row INSERT is ~50 kB, and parsing it cost more than the values' dumping.
    """
    numbers = itertools.count(1)

    def replace(match: re.Match) -> str:
        if match.group(1) == "%":
            return "%"
        if match.group(1) == "s":
            return f"${next(numbers)}"
        raise ValueError(f"Unsupported placeholder %{match.group(1)} in {sql[:80]!r}")

    return _PLACEHOLDER.sub(replace, sql)


@functools.cache
def _prepared_cursor_class():
    import psycopg

    class PreparedCursor(psycopg.RawCursor):
        """PostgreSQL's own placeholders, server-side binding, always prepared (psycopg keeps a
        per-connection cache of them)."""

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    return PreparedCursor


@dataclass
class Statement:
    sql: str
    params: Sequence[Any]
    # Instances whose primary keys the statement returns, in order (an INSERT ... RETURNING).
    returns_pks_of: Sequence[Model] = ()


def insert(objs: Sequence[Model], *, returning: bool = True, presaved: bool = False) -> Statement:
    """One multi-row INSERT of ``objs`` (one model): SQL built once per model and row count.

    Values go through each field's pre_save and get_db_prep_save, as in Model.save().
    ``presaved``: pre_save (auto_now_add and the like) already ran on the objects when they
    were queued, so their timestamps are those of the moment they were created.
    """
    model = type(objs[0])
    fields, sql = _insert_sql(model, len(objs), returning, connection.vendor)
    passthrough = _passthrough_fields(model)
    params: list[Any] = []
    append = params.append
    for obj in objs:
        for f in fields:
            value = getattr(obj, f.attname) if presaved else f.pre_save(obj, add=True)
            if f in passthrough and type(value) in passthrough[f]:
                append(value)
            else:
                append(f.get_db_prep_save(value, connection))
    return Statement(sql=sql, params=params, returns_pks_of=objs if returning else ())


@functools.cache
def _passthrough_fields(model: type[Model]) -> dict[Any, tuple[type, ...]]:
    """Fields whose get_db_prep_save returns a value of these exact types unchanged.

    A 100-row insert has thousands of values, most of them strings and integers that Django's
    per-value preparation hands back as they are; skipping it for those is a third of the cost.
    Only Django's own field classes (not subclasses, which may override) are listed.
    """
    from django.db.models import fields as f
    from django.db.models.fields.related import ForeignKey

    text = {f.CharField, f.TextField, f.EmailField, f.SlugField, f.URLField}
    integer = {f.IntegerField, f.BigIntegerField, f.SmallIntegerField, f.PositiveIntegerField,
               f.PositiveSmallIntegerField, f.PositiveBigIntegerField}
    none = type(None)
    passthrough: dict[Any, tuple[type, ...]] = {}
    for field in model._meta.concrete_fields:
        kind = type(field)
        if kind in text:
            passthrough[field] = (str, none)
        elif kind in integer:
            passthrough[field] = (int, none)
        elif kind is f.BooleanField:
            passthrough[field] = (bool, none)
        elif kind is ForeignKey and type(field.target_field) in integer | {f.AutoField, f.BigAutoField}:
            passthrough[field] = (int, none)
    return passthrough


_TYPE_MODIFIER = re.compile(r"\([^)]*\)")


@functools.lru_cache(maxsize=128)  # a shape per model and row count; see _native_placeholders
def _insert_sql(model: type[Model], rows: int, returning: bool, vendor: str) -> tuple[list, str]:
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not f.generated and f is not opts.auto_field]
    quote = connection.ops.quote_name
    # Typed placeholders: a NULL in every row of a column must still be that column's type. The
    # cast names the type without its modifier: an explicit cast to varchar(n) silently cuts a
    # longer value, where the insert's own assignment refuses it as the ORM's would.
    if vendor == "postgresql":
        row = "(" + ", ".join(f"%s::{_TYPE_MODIFIER.sub('', f.cast_db_type(connection))}" for f in fields) + ")"
    else:
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * rows)}"
    )
    if returning:
        sql += f" RETURNING {quote(opts.pk.column)}"
    return fields, sql


def run_together(statements: Iterable[Statement]) -> None:
    """Run the statements, on PostgreSQL in one round trip (one statement of data-modifying CTEs).

    They cannot see each other's rows (one snapshot): use it for independent writes only.
    Primary keys returned by inserts are set on their instances.
    """
    statements = [s for s in statements if s.sql]
    if not statements:
        return
    if connection.vendor != "postgresql":
        # Elsewhere (SQLite) a statement costs no network round trip: run them one by one.
        for statement in statements:
            rows = fetch(statement.sql, statement.params)
            if statement.returns_pks_of:
                _set_pks(statement.returns_pks_of, [row[0] for row in rows])
        return
    parts, params, selects = [], [], []
    for index, statement in enumerate(statements):
        parts.append(f"s{index} AS ({statement.sql})")
        params.extend(statement.params)
        if statement.returns_pks_of:
            pk = connection.ops.quote_name(statement.returns_pks_of[0]._meta.pk.column)
            selects.append(f"SELECT {index}, {pk} FROM s{index}")
    sql = "WITH " + ", ".join(parts) + " " + (" UNION ALL ".join(selects) if selects else "SELECT NULL, NULL")
    rows = fetch(sql, params)
    for index, statement in enumerate(statements):
        if statement.returns_pks_of:
            _set_pks(statement.returns_pks_of, [pk for i, pk in rows if i == index])


def _set_pks(objs: Sequence[Model], pks: list[Any]) -> None:
    if len(pks) != len(objs):
        raise RuntimeError(f"Expected {len(objs)} primary keys back, got {len(pks)}.")
    for obj, pk in zip(objs, pks, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias


def presave(obj: Model) -> Model:
    """Run each field's pre_save as Model.save() would for an insert (fills auto_now_add now)."""
    for f in obj._meta.concrete_fields:
        if f is not obj._meta.auto_field:
            setattr(obj, f.attname, f.pre_save(obj, add=True))
    return obj
