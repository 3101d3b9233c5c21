"""Generates docs/api.md and docs/schema.md from the catalog of a database built from
migrations/, so that the reference can never drift from what a DBA deploys.

    python scripts/gen_docs.py                 # fresh database paycore_docs in the project cluster
    python scripts/gen_docs.py --database-url postgresql://...   # an existing migrated database
    python scripts/gen_docs.py --check         # exit 1 if docs/ differs (what tests/test_docs.py does)

What is documented, and where each fact comes from:

- every function of schema ``public`` (PostgREST exposes them as RPC), and every function of
  schema ``paycore`` that some role other than its owner may execute or whose comment starts
  with ``Job:`` (the webhook's and the jobs' entry points): signature, argument names, types
  and defaults (``pg_get_function_arguments``); the result and the JSON PostgREST answers
  with (``pg_get_function_result``, the columns of a returned table type); who may call it
  (``has_function_privilege`` per role: the grants, not prose); the comment; the errors.
- The errors of a function are read from the code itself, not typed twice: every
  ``raise exception '<message>' ... using errcode = 'PTxxx', hint = '<key>'`` in its body and,
  transitively, in the body of every ``paycore.*`` function it calls. tests/test_docs.py
  also fails when a raise in ``public`` or ``paycore`` has no PT errcode or no known hint.
- every table or view of ``public`` that anon or authenticated may SELECT: columns, types,
  comments, and its RLS policies in one line each.
- docs/schema.md: a Mermaid ``erDiagram`` per module (the module is the schema/ file that
  creates the table), relationships from the catalog's foreign keys.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localdb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ROLES = ("anon", "authenticated", "service_role", "paycore_webhook")
REGENERATE = "make docs"

# The hint keys paycore raises, by SQLSTATE: the table of docs/errors.md.
KNOWN_HINTS = {
    "PT400": {"invalid_argument"},
    "PT402": {"insufficient_credits"},
    "PT403": {"forbidden"},
    "PT404": {"not_found"},
    "PT409": {"idempotency_conflict", "invalid_state", "slot_taken", "capacity_exceeded",
              "balance_limit_exceeded"},
    "PT429": {"usage_limit_exceeded", "rate_limited"},
}

RAISE_RE = re.compile(r"\braise\s+exception\b(?P<stmt>(?:'(?:[^']|'')*'|[^;'])*);", re.IGNORECASE)
MESSAGE_RE = re.compile(r"^\s*'(?P<msg>(?:[^']|'')*)'")
ERRCODE_RE = re.compile(r"\berrcode\s*=\s*'(?P<code>[^']*)'", re.IGNORECASE)
HINT_RE = re.compile(r"\bhint\s*=\s*'(?P<hint>[^']*)'", re.IGNORECASE)
CALL_RE = re.compile(r"\bpaycore\.([a-z_][a-z0-9_]*)\s*\(")

JSON_TYPES = {
    "uuid": "string (uuid)",
    "text": "string",
    "character varying": "string",
    "bigint": "number (integer)",
    "integer": "number (integer)",
    "smallint": "number (integer)",
    "numeric": "number",
    "boolean": "boolean",
    "jsonb": "value",
    "json": "value",
    "timestamp with time zone": "string (ISO 8601 timestamp)",
    "date": "string (ISO 8601 date)",
    "text[]": "array of strings",
    "void": "null",
}


@dataclass
class Raise:
    code: str | None
    hint: str | None
    message: str


@dataclass
class Function:
    oid: int
    schema: str
    name: str
    arguments: str
    result: str
    returns_set: bool
    return_type: str
    return_relid: int
    volatility: str
    security_definer: bool
    comment: str
    source: str
    language: str
    callers: list[str] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def raises_in(source: str) -> list[Raise]:
    found = []
    for m in RAISE_RE.finditer(source):
        stmt = m.group("stmt")
        msg = MESSAGE_RE.match(stmt)
        code = ERRCODE_RE.search(stmt)
        hint = HINT_RE.search(stmt)
        found.append(Raise(code.group("code") if code else None, hint.group("hint") if hint else None,
                           msg.group("msg").replace("''", "'") if msg else stmt.strip()))
    return found


def load_functions(conn: psycopg.Connection) -> dict[str, Function]:
    rows = conn.execute(
        """
        select p.oid, n.nspname, p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               p.proretset, format_type(p.prorettype, null), coalesce(t.typrelid, 0), p.provolatile,
               p.prosecdef, coalesce(obj_description(p.oid, 'pg_proc'), ''), p.prosrc, l.lanname
        from pg_proc as p
        join pg_namespace as n on n.oid = p.pronamespace
        join pg_language as l on l.oid = p.prolang
        left join pg_type as t on t.oid = p.prorettype and t.typtype = 'c'
        where n.nspname in ('public', 'paycore') and p.prokind = 'f'
        order by n.nspname, p.proname, p.oid
        """
    ).fetchall()
    functions = {}
    for row in rows:
        f = Function(*row)
        f.callers = [
            role for role in ROLES
            if conn.execute("select has_function_privilege(%s, %s::oid, 'EXECUTE')",
                            (role, f.oid)).fetchone()[0]
        ]
        functions[f.qualified] = f
    return functions


def errors_of(fn: Function, functions: dict[str, Function], seen: set[str] | None = None) -> list[Raise]:
    """The raises of fn's body and, transitively, of the paycore functions it calls."""
    seen = seen if seen is not None else set()
    if fn.qualified in seen:
        return []
    seen.add(fn.qualified)
    result = raises_in(fn.source)
    for callee in CALL_RE.findall(fn.source):
        target = functions.get(f"paycore.{callee}")
        if target is not None:
            result += errors_of(target, functions, seen)
    return result


def documented(fn: Function) -> bool:
    if fn.schema == "public":
        return True
    return bool(fn.callers) or fn.comment.startswith("Job:")


Column = tuple[str, str, bool, str | None, str | None]


def table_columns(conn: psycopg.Connection, relid: int) -> list[Column]:
    return conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)
        from pg_attribute as a
        left join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (relid,),
    ).fetchall()


def json_type(sql_type: str) -> str:
    return JSON_TYPES.get(sql_type, sql_type)


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", text.lower().replace(" ", "-").replace(".", ""))


def returns_text(fn: Function) -> str:
    result = fn.result
    if result.startswith("TABLE("):
        cols = [c.strip() for c in result[len("TABLE("):-1].split(",")]
        fields = ", ".join(f'"{c.split(" ", 1)[0]}": {json_type(c.split(" ", 1)[1])}' for c in cols)
        return f"a JSON array of objects `{{{fields}}}` (one row per element)"
    if fn.return_relid:
        table = fn.return_type
        link = f"[`{table}`](#{anchor('table ' + table)})"
        if fn.returns_set:
            return f"a JSON array of {link} rows (objects with its columns)"
        return f"one {link} row: a JSON object with its columns"
    if fn.returns_set:
        return f"a JSON array of {json_type(fn.return_type)}"
    if fn.return_type == "void":
        return "nothing (`null`)"
    return f"a JSON {json_type(fn.return_type)} (`{fn.return_type}`)"


def rpc_example(fn: Function, conn: psycopg.Connection) -> str:
    names = conn.execute(
        """
        select coalesce(p.proargnames[i], ''), format_type(p.proargtypes[i - 1], null),
               i > p.pronargs - p.pronargdefaults
        from pg_proc as p, generate_series(1, p.pronargs) as i
        where p.oid = %s order by i
        """,
        (fn.oid,),
    ).fetchall()
    required = [n for n, _, optional in names if not optional]
    body = ", ".join(f"{n}: …" for n in required)
    return f"`supabase.rpc('{fn.name}', {{ {body} }})`" if body else f"`supabase.rpc('{fn.name}')`"


def render_api(conn: psycopg.Connection) -> str:
    functions = load_functions(conn)
    out: list[str] = []
    w = out.append
    w("# paycore API reference\n\n")
    w(f"Generated from the catalog of a database built from `migrations/` by `scripts/gen_docs.py`\n"
      f"(`{REGENERATE}`); `tests/test_docs.py` fails when this file differs. Do not edit by hand.\n\n")
    w("Clients call the `public` functions over PostgREST RPC: `POST /rest/v1/rpc/<name>` with a JSON\n"
      "body of named arguments, i.e. `supabase.rpc(name, args)` in supabase-js and\n"
      "`supabase.rpc(name, args).execute()` in supabase-py. Arguments with a default may be left out.\n"
      "**Callable by** comes from the EXECUTE grants: `authenticated` is a signed-in user's JWT,\n"
      "`service_role` the secret key (servers only), `paycore_webhook` the webhook's database login.\n"
      "A role that is not listed gets SQLSTATE 42501 (HTTP 401/403). The errors are SQLSTATE → HTTP\n"
      "status and the stable key in `error.hint`; see [errors.md](errors.md).\n\n")
    public = [f for f in functions.values() if f.schema == "public"]
    internal = [f for f in functions.values() if f.schema == "paycore" and documented(f)]
    w("## Functions\n\n")
    for f in public:
        w(f"- [`{f.name}`](#{anchor('function ' + f.qualified)}) — callable by "
          f"{', '.join(f.callers) or 'nobody but the owner'}\n")
    if internal:
        w("\nInternal entry points (schema `paycore`, not exposed over PostgREST):\n\n")
        for f in internal:
            w(f"- [`{f.qualified}`](#{anchor('function ' + f.qualified)})\n")
    for f in public + internal:
        w(f"\n### function {f.qualified}\n\n")
        w(f"```sql\n{f.qualified}({f.arguments})\nreturns {f.result}\n```\n\n")
        w(f"{f.comment}\n\n" if f.comment else "")
        w(f"- **Callable by:** {', '.join(f.callers) or 'nobody but the owner'}\n")
        w(f"- **Returns:** {returns_text(f)}\n")
        if f.schema == "public":
            w(f"- **Call:** `POST /rest/v1/rpc/{f.name}`; {rpc_example(f, conn)}\n")
        volatility = {"i": "immutable", "s": "stable (may be called with GET)", "v": "volatile (POST)"}
        w(f"- **Kind:** {f.language}, {volatility[f.volatility]}"
          f"{', SECURITY DEFINER' if f.security_definer else ''}\n")
        errors: dict[tuple[str, str], list[str]] = {}
        for r in errors_of(f, functions):
            if r.code and r.code.startswith("PT"):
                errors.setdefault((r.code, r.hint or ""), [])
                if r.message not in errors[(r.code, r.hint or "")]:
                    errors[(r.code, r.hint or "")].append(r.message)
        if errors:
            w("\n| SQLSTATE | HTTP | hint | message (`%` = a value) |\n|---|---|---|---|\n")
            for (code, hint), messages in sorted(errors.items()):
                shown = "<br>".join(m.replace("|", "\\|") for m in messages)
                w(f"| {code} | {code[2:]} | `{hint}` | {shown} |\n")
        else:
            w("\nRaises no paycore error.\n")
    w("\n## Tables clients read\n\n")
    w("Clients read these tables with `supabase.from(table).select()`; Row Level Security decides\n"
      "which rows. No client role may insert, update or delete any of them: every write is a\n"
      "function above. `service_role` bypasses RLS and reads every row.\n")
    tables = conn.execute(
        """
        select c.oid, c.relname, c.relkind::text, coalesce(obj_description(c.oid, 'pg_class'), ''),
               array(select r from unnest(array['anon', 'authenticated', 'service_role']) as r
                     where has_table_privilege(r, c.oid, 'SELECT'))
        from pg_class as c
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
          and (has_table_privilege('anon', c.oid, 'SELECT')
               or has_table_privilege('authenticated', c.oid, 'SELECT'))
        order by c.relname
        """
    ).fetchall()
    service_only = conn.execute(
        """
        select c.oid, c.relname, c.relkind::text, coalesce(obj_description(c.oid, 'pg_class'), ''),
               array['service_role']
        from pg_class as c
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
          and c.relname not like '%yoyo%'
          and has_table_privilege('service_role', c.oid, 'SELECT')
          and not has_table_privilege('anon', c.oid, 'SELECT')
          and not has_table_privilege('authenticated', c.oid, 'SELECT')
        order by c.relname
        """
    ).fetchall()
    relations = [("table", t) for t in tables]
    relations.append(("heading", None))
    relations += [("table", t) for t in service_only]
    for what, row in relations:
        if what == "heading":
            w("\n## Tables and views for service_role only\n\n")
            w("Configuration and dashboards a server reads with the secret key; no client role reads them.\n")
            continue
        oid, name, kind, comment, readers = row
        w(f"\n### {'view' if kind == 'v' else 'table'} public.{name}\n\n")
        w(f"{comment}\n\n" if comment else "")
        w(f"- **Readable by:** {', '.join(readers)}\n")
        policies = conn.execute(
            "select policyname, array_to_string(roles, ', '), cmd, coalesce(qual, ''),"
            " coalesce(with_check, '') from pg_policies"
            " where schemaname = 'public' and tablename = %s order by policyname",
            (name,),
        ).fetchall()
        for pname, roles, cmd, qual, check in policies:
            rule = f"using `{qual}`" if qual else ""
            rule += f" check `{check}`" if check else ""
            w(f"- **RLS** `{pname}`: {cmd.lower()} for {roles}, {rule.strip()}\n")
        w("\n| column | type | null | default | description |\n|---|---|---|---|---|\n")
        for col, typ, notnull, default, ccomment in table_columns(conn, oid):
            w(f"| `{col}` | {typ} | {'no' if notnull else 'yes'} | "
              f"{('`' + default + '`') if default else ''} | {(ccomment or '').replace('|', '/')} |\n")
    return "".join(out)


def modules_of_tables() -> dict[str, str]:
    """table (schema.name) -> module, from the schema/ file that creates it."""
    result = {}
    for path in sorted((ROOT / "schema").glob("*.sql")):
        # public and paycore only: auth and storage belong to Supabase (0001 only emulates them).
        for m in re.finditer(r"create table ((?:public|paycore)\.[a-z_]+)", path.read_text()):
            result.setdefault(m.group(1), path.stem)
    return result


def mermaid_type(sql_type: str) -> str:
    short = {"timestamp with time zone": "timestamptz"}
    t = short.get(sql_type, re.sub(r"\(.*\)", "", sql_type))
    return re.sub(r"[^a-zA-Z0-9_]", "_", t.replace("[]", "_array").replace(" ", "_"))


def entity(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}_{name}"


def render_schema(conn: psycopg.Connection) -> str:
    modules = modules_of_tables()
    out = ["# paycore schema\n\n",
           "Entity-relationship diagrams generated from the catalog's foreign keys by\n"
           f"`scripts/gen_docs.py` (`{REGENERATE}`), one per module (the `schema/` file that creates\n"
           "the tables). Tables of other modules and Supabase's (`auth_users` is `auth.users`) appear\n"
           "where a foreign key reaches them. PK = primary key, FK = foreign key, UK = unique.\n"]
    fks = conn.execute(
        """
        select cn.nspname, c.relname, fn.nspname, f.relname, co.conname,
               array(select a.attname from unnest(co.conkey) as k join pg_attribute as a
                     on a.attrelid = co.conrelid and a.attnum = k),
               bool_and(a.attnotnull),
               exists (select 1 from pg_constraint as u where u.conrelid = co.conrelid
                       and u.contype in ('p', 'u') and u.conkey = co.conkey)
        from pg_constraint as co
        join pg_class as c on c.oid = co.conrelid join pg_namespace as cn on cn.oid = c.relnamespace
        join pg_class as f on f.oid = co.confrelid join pg_namespace as fn on fn.oid = f.relnamespace
        join pg_attribute as a on a.attrelid = co.conrelid and a.attnum = any(co.conkey)
        where co.contype = 'f' and cn.nspname in ('public', 'paycore')
        group by cn.nspname, c.relname, fn.nspname, f.relname, co.conname, co.conkey, co.conrelid
        order by 1, 2, 5
        """
    ).fetchall()
    by_module: dict[str, list[str]] = {}
    for qualified, module in modules.items():
        by_module.setdefault(module, []).append(qualified)
    for module in sorted(by_module):
        tables = by_module[module]
        out.append(f"\n## {module}\n\n```mermaid\nerDiagram\n")
        for qualified in tables:
            schema, name = qualified.split(".")
            relid = conn.execute("select to_regclass(%s)::oid", (qualified,)).fetchone()[0]
            if relid is None:
                continue
            keys = conn.execute(
                """
                select a.attname, string_agg(distinct case co.contype when 'p' then 'PK' when 'f' then 'FK'
                                                     when 'u' then 'UK' end, ',')
                from pg_constraint as co
                join pg_attribute as a on a.attrelid = co.conrelid and a.attnum = any(co.conkey)
                where co.conrelid = %s and co.contype in ('p', 'f', 'u') group by a.attname
                """,
                (relid,),
            ).fetchall()
            key_of = dict(keys)
            out.append(f"    {entity(schema, name)} {{\n")
            for col, typ, _notnull, _default, _comment in table_columns(conn, relid):
                key = f" {key_of[col]}" if col in key_of else ""
                out.append(f"        {mermaid_type(typ)} {col}{key}\n")
            out.append("    }\n")
        for cs, ct, fs, ft, _conname, cols, notnull, unique in fks:
            if f"{cs}.{ct}" not in tables:
                continue
            left = "||" if notnull else "|o"
            right = "o|" if unique else "o{"
            out.append(f"    {entity(fs, ft)} {left}--{right} {entity(cs, ct)} : \"{', '.join(cols)}\"\n")
        out.append("```\n")
    return "".join(out)


def render(conninfo: str) -> dict[Path, str]:
    # Only pg_catalog on the path: every type and table outside it is printed schema-qualified.
    with psycopg.connect(conninfo, options="-c search_path=pg_catalog") as conn:
        return {DOCS / "api.md": render_api(conn), DOCS / "schema.md": render_schema(conn)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a database built from migrations/ (default: a fresh one)")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/ differs from the catalog")
    args = parser.parse_args()
    conninfo = args.database_url
    if not conninfo:
        cluster, _, _ = localdb.start_project()
        conninfo = localdb.create_database(cluster.url(), "paycore_docs")
        localdb.yoyo("apply", conninfo)
    stale = []
    for path, text in render(conninfo).items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(path.relative_to(ROOT))
    if stale:
        print(f"stale: {', '.join(map(str, stale))}; regenerate with `{REGENERATE}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
