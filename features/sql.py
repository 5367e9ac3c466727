"""Quoting names and strings into SQL text: the one place that knows each dialect's rules.

- DuckDB and PostgreSQL: identifiers in double quotes (``"x"``, a quote doubled), strings in
  single quotes (``'x'``, a quote doubled; PostgreSQL's ``standard_conforming_strings`` is on by
  default since 9.1, so a backslash is an ordinary character).
- Spark SQL: identifiers in backticks (`` `x` ``, a backtick doubled); strings in single quotes
  with backslash escapes (``'it\\'s'``), Spark's default parser setting
  (``spark.sql.parser.escapedStringLiterals=false``).

The feature and contract SQL is written in DuckDB's dialect and reaches Spark through
:func:`churnguard.features.spark.to_spark_sql`, which re-quotes it; the Spark rules here are for
the few statements written for Spark directly.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["duckdb", "postgres", "spark"]


def ident(name: str, dialect: Dialect = "duckdb") -> str:
    """``name`` as a quoted identifier (a column, table or schema name)."""
    if dialect == "spark":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def literal(value: str, dialect: Dialect = "duckdb") -> str:
    """``value`` as a string literal."""
    if dialect == "spark":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("'", "''") + "'"


def qualified(*parts: str, dialect: Dialect = "duckdb") -> str:
    """A dotted name, every part quoted: ``qualified("crm", "scores")`` → ``"crm"."scores"``."""
    return ".".join(ident(p, dialect) for p in parts)
