"""ORM reads compiled once per process and database, then only executed.

Django compiles a queryset to SQL each time it is evaluated: about a millisecond for a
filtered select, more than the query itself takes on a warm database. The worker's hot path
runs the same few reads on every request. A :class:`Prepared` read is written as an ordinary
queryset over marker arguments; on first use for a database it is compiled, the markers are
found among the query's parameters, and from then on each call substitutes its arguments and
executes the SQL. Rows become model instances exactly as the queryset would make them
(the backend's converters applied, then ``Model.from_db``), so they save and compare as
usual. Only plain querysets of one model are accepted (no ``select_related``, ``only`` or
annotations): their columns are the model's concrete fields, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from django.db import connections
from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)

# Marker arguments: values no real argument takes, told apart by position.
_INT_MARK = -7_340_032_000_000
_TIME_MARK = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def _marker(kind: type, index: int) -> Any:
    if kind is int:
        return _INT_MARK - index
    if kind is datetime:
        return _TIME_MARK.replace(microsecond=index)
    raise TypeError(f"no marker for arguments of type {kind.__name__}")


@dataclass(frozen=True)
class _Compiled:
    model: type[Model]
    sql: str
    params: list[Any]  # the compiled parameters; where ``slots`` names an argument, it
    slots: list[int | None]
    names: list[str]  # the attribute of each column
    converters: list[tuple[int, list[Any], Any]]  # (column, converters, expression)


class Prepared(Generic[M]):
    """``Prepared(lambda project, worker: Model.objects.filter(...)[:1], int, int)``; then
    ``.all(project_id, worker_id)`` or ``.first(...)`` run it without compiling it again."""

    def __init__(self, build: Callable[..., QuerySet[M]], *kinds: type) -> None:
        self._build = build
        self._kinds = kinds
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _adapt(self, alias: str, kind: type, value: Any) -> Any:
        if kind is datetime:
            return connections[alias].ops.adapt_datetimefield_value(value)
        return value

    def _compile(self, alias: str) -> _Compiled:
        markers = [_marker(kind, i) for i, kind in enumerate(self._kinds)]
        queryset = self._build(*markers).using(alias)
        query = queryset.query
        if query.select_related or query.annotations or query.deferred_loading[0]:
            raise ValueError("a prepared read is a plain queryset of one model")
        compiler = query.get_compiler(alias)
        sql, params = compiler.as_sql()
        adapted = [
            self._adapt(alias, kind, m) for kind, m in zip(self._kinds, markers, strict=True)
        ]
        slots: list[int | None] = []
        for param in params:
            found = [i for i, a in enumerate(adapted) if type(a) is type(param) and a == param]
            slots.append(found[0] if found else None)
        if sorted({s for s in slots if s is not None}) != list(range(len(markers))):
            raise ValueError("every argument of a prepared read must reach its SQL")
        fields = queryset.model._meta.concrete_fields
        names = [field.attname for field in fields]
        expressions = [select[0] for select in compiler.select]
        if [getattr(e, "target", None) for e in expressions] != list(fields):
            raise ValueError("a prepared read selects its model's concrete fields")
        converters = [(pos, convs, expr) for pos, (convs, expr)
                      in compiler.get_converters(expressions).items()]  # fmt: skip
        return _Compiled(queryset.model, sql, list(params), slots, names, converters)

    def all(self, *args: Any, using: str = "default") -> list[M]:
        compiled = self._compiled.get(using)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(using) or self._compile(using)
                self._compiled[using] = compiled
        params = [
            compiled.params[i]
            if slot is None
            else self._adapt(using, self._kinds[slot], args[slot])
            for i, slot in enumerate(compiled.slots)
        ]
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        model = compiled.model
        instances = []
        for row in rows:
            values = list(row)
            for pos, convs, expression in compiled.converters:
                value = values[pos]
                for converter in convs:
                    value = converter(value, expression, connection)
                values[pos] = value
            instances.append(cast(M, model.from_db(using, compiled.names, values)))
        return instances

    def first(self, *args: Any, using: str = "default") -> M | None:
        rows = self.all(*args, using=using)
        return rows[0] if rows else None


class Joined:
    """Hand-written SQL over several models' tables, each row split into one instance per
    model. ``sql`` holds ``{columns}`` where the select list goes; ``tables`` pairs each
    model with the alias its table has in ``sql``. Parameters as the cursor takes them."""

    def __init__(self, sql: str, *tables: tuple[type[Model], str]) -> None:
        self._template = sql
        self._tables = tables
        self._sql: dict[str, str] = {}
        self._converters_by_alias: dict[str, Any] = {}

    def sql(self, using: str = "default") -> str:
        sql = self._sql.get(using)
        if sql is None:
            quote = connections[using].ops.quote_name
            columns = ", ".join(
                f"{alias}.{quote(field.column)}"
                for model, alias in self._tables
                for field in model._meta.concrete_fields
            )
            sql = self._sql[using] = self._template.replace("{columns}", columns)
        return sql

    def first(self, params: Any, using: str = "default") -> tuple[Model, ...] | None:
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(self.sql(using), params)
            row = cursor.fetchone()
        return None if row is None else self._instances(row, using)

    def all(
        self, params: Any, using: str = "default", *, expand: dict[str, int] | None = None
    ) -> list[tuple[Model, ...]]:
        """Every row. ``expand`` gives the length of each ``{name}`` placeholder in ``sql``
        to be written as a list of ``%s`` (an ``IN`` list); ``params`` then holds its values
        in place."""
        connection = connections[using]
        sql = self.sql(using)
        if expand:
            sql = sql.format(**{name: ", ".join(["%s"] * n) for name, n in expand.items()})
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return [self._instances(row, using) for row in rows]

    def _instances(self, row: Any, using: str) -> tuple[Model, ...]:
        connection = connections[using]
        instances, start = [], 0
        for model, names, converters in self._converters(using):
            values = list(row[start : start + len(names)])
            start += len(names)
            for i, column_converters, column in converters:
                for converter in column_converters:
                    values[i] = converter(values[i], column, connection)
            instances.append(model.from_db(using, names, values))
        return tuple(instances)

    def _converters(
        self, using: str
    ) -> list[tuple[type[Model], list[str], list[tuple[int, list[Any], Any]]]]:
        """Per table: the model, its attribute names, and the converters of the columns that
        have any (the backend's, then the field's), as a compiled query applies them."""
        known = self._converters_by_alias.get(using)
        if known is None:
            connection = connections[using]
            known = []
            for model, alias in self._tables:
                fields = model._meta.concrete_fields
                converters = []
                for i, field in enumerate(fields):
                    column = field.get_col(alias)
                    found = connection.ops.get_db_converters(column)
                    found += column.get_db_converters(connection)
                    if found:
                        converters.append((i, found, column))
                known.append((model, [field.attname for field in fields], converters))
            self._converters_by_alias[using] = known
        return known
