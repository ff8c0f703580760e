"""Migration operations shared by several apps' migrations."""

from __future__ import annotations

from django.db import migrations


def drop_single_column_indexes(covered: list[tuple[str, str]]) -> migrations.RunPython:
    """Drop the plain index on each (table, column), keeping the column's foreign-key constraint.

    For a column another index already leads with. Pair it with a state-only AlterField to
    db_index=False: Django's own AlterField on a foreign key drops and re-adds the constraint,
    which re-checks every row of the table under lock.
    """

    def drop(apps, schema_editor):
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            for table, column in covered:
                for name, info in connection.introspection.get_constraints(cursor, table).items():
                    if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == [column]:
                        schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")

    def recreate(apps, schema_editor):
        quote = schema_editor.quote_name
        for table, column in covered:
            name = schema_editor._create_index_name(table, [column])
            schema_editor.execute(f"CREATE INDEX {quote(name)} ON {quote(table)} ({quote(column)})")

    return migrations.RunPython(drop, recreate)
