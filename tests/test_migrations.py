"""migrations/ is what a database receives: it must apply cleanly with yoyo, apply twice
without change, roll back and re-apply, leave Supabase's own objects alone, and build
exactly the catalog that schema/ + functions/ + policies/ describe (the drift test)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import psycopg
import pytest

import localdb

MIGRATIONS = localdb.MIGRATIONS
SCHEMAS = ("public", "paycore", "auth", "storage")

# One line per catalog fact, for every object of the paycore-managed schemas.
CATALOG_SQL = """
with ns as (
    select oid, nspname from pg_namespace where nspname = any(%(schemas)s)
),
rel as (
    select c.oid, c.relname, c.relkind, ns.nspname
    from pg_class as c join ns on ns.oid = c.relnamespace
    where c.relname not in ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock',
                            '_yoyo_migration_pkey', '_yoyo_log_pkey', '_yoyo_version_pkey',
                            'yoyo_lock_pkey')
)
select 'schema ' || nspname || ' comment=' || coalesce(obj_description(oid, 'pg_namespace'), '')
    || ' acl=' || coalesce((select string_agg(a::text, ',' order by a::text)
                            from unnest(n.nspacl) as a), '')
from pg_namespace as n where nspname = any(%(schemas)s)
union all
select 'relation ' || rel.nspname || '.' || rel.relname || ' kind=' || rel.relkind::text
    || ' rls=' || c.relrowsecurity::text || ' force=' || c.relforcerowsecurity::text
    || ' comment=' || coalesce(obj_description(rel.oid, 'pg_class'), '')
    || ' acl=' || coalesce((select string_agg(a::text, ',' order by a::text)
                            from unnest(c.relacl) as a), '')
from rel join pg_class as c on c.oid = rel.oid
union all
select 'column ' || nspname || '.' || relname || '.' || a.attname || ' '
    || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull::text
    || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    || ' generated=' || a.attgenerated::text || ' identity=' || a.attidentity::text
    || ' comment=' || coalesce(col_description(rel.oid, a.attnum), '')
from rel
join pg_attribute as a on a.attrelid = rel.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
where rel.relkind in ('r', 'p', 'v', 'm', 'f')
union all
select 'constraint ' || nspname || '.' || relname || ' ' || co.conname || ' '
    || pg_get_constraintdef(co.oid)
from rel join pg_constraint as co on co.conrelid = rel.oid
union all
select 'index ' || pg_get_indexdef(i.indexrelid)
from rel join pg_index as i on i.indrelid = rel.oid
union all
select 'trigger ' || pg_get_triggerdef(t.oid)
from rel join pg_trigger as t on t.tgrelid = rel.oid and not t.tgisinternal
union all
select 'policy ' || schemaname || '.' || tablename || ' ' || policyname || ' ' || permissive || ' '
    || array_to_string(roles, ',') || ' ' || cmd || ' using=' || coalesce(qual, '')
    || ' check=' || coalesce(with_check, '')
from pg_policies where schemaname = any(%(schemas)s)
union all
select 'view ' || nspname || '.' || relname || ' ' || pg_get_viewdef(rel.oid)
from rel where relkind in ('v', 'm')
union all
select 'function ' || pg_get_functiondef(p.oid)
    || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
    || ' acl=' || coalesce((select string_agg(a::text, ',' order by a::text)
                            from unnest(p.proacl) as a), '')
from pg_proc as p join ns on ns.oid = p.pronamespace
where p.prokind in ('f', 'p')
union all
select 'default acl ' || coalesce(n.nspname, '*') || ' ' || d.defaclobjtype::text || ' '
    || (select string_agg(a::text, ',' order by a::text) from unnest(d.defaclacl) as a)
from pg_default_acl as d left join pg_namespace as n on n.oid = d.defaclnamespace
union all
select 'type ' || n.nspname || '.' || t.typname || ' ' || t.typtype::text
from pg_type as t join ns as n on n.oid = t.typnamespace
where t.typtype in ('e', 'd', 'c') and t.typrelid = 0
"""


def catalog(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(CATALOG_SQL, {"schemas": list(SCHEMAS)}).fetchall()
    return sorted(r[0] for r in rows)


def assert_same_catalog(have: list[str], want: list[str], have_name: str, want_name: str) -> None:
    if have != want:
        diff = "\n".join(difflib.unified_diff(want, have, want_name, have_name, lineterm="", n=0))
        pytest.fail(f"catalogs differ:\n{diff[:20000]}")


def test_migration_files_are_well_formed() -> None:
    names = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    forward = [n for n in names if not n.endswith(".rollback.sql") and n != "post-apply.sql"]
    assert forward, "no migrations"
    for name in forward:
        assert re.fullmatch(r"\d{4}\.[a-z]+-[a-z0-9-]+\.sql", name), f"{name}: want NNNN.<verb>-<what>.sql"
        assert name.replace(".sql", ".rollback.sql") in names, f"{name} has no rollback"
    numbers = [n[:4] for n in forward]
    assert numbers == [f"{i:04d}" for i in range(1, len(forward) + 1)], "numbers must be 0001, 0002, ..."


def test_migrations_equal_source_of_truth(db: str, make_database) -> None:
    """The drift test: migrations/ and schema/+functions/+policies/ build the same catalog."""
    source = make_database("source")
    localdb.build_from_source(source)
    assert_same_catalog(catalog(db), catalog(source), "migrations/", "schema/+functions/+policies/")


def test_second_apply_changes_nothing(make_database) -> None:
    conninfo = make_database("reapply")
    localdb.yoyo("apply", conninfo)
    first = catalog(conninfo)
    applied = localdb.yoyo("apply", conninfo, "-v")
    assert "Applying" not in applied.stdout + applied.stderr
    assert catalog(conninfo) == first


def test_rollback_all_then_reapply(make_database) -> None:
    conninfo = make_database("rollback")
    localdb.yoyo("apply", conninfo)
    applied = catalog(conninfo)
    localdb.yoyo("rollback", conninfo, "--all")
    left = [line for line in catalog(conninfo) if not line.startswith("schema public ")]
    assert left == [], "rollback left objects behind:\n" + "\n".join(left[:50])
    localdb.yoyo("apply", conninfo)
    assert_same_catalog(catalog(conninfo), applied, "re-applied", "applied")


def test_existing_supabase_objects_are_left_alone(make_database) -> None:
    """On Supabase auth, storage and their functions exist: the base migration must not
    replace them, and its rollback must not drop them."""
    conninfo = make_database("supabase")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("""
            create schema auth;
            create table auth.users (id uuid primary key, email text, supabase_only text);
            create function auth.uid() returns uuid language sql stable
            as $$ select '00000000-0000-4000-8000-00000000000a'::uuid $$;
            create schema storage;
            create table storage.buckets (id text primary key, name text not null, public boolean,
                file_size_limit bigint, allowed_mime_types text[], owner uuid);
            create table storage.objects (id uuid primary key default gen_random_uuid(),
                bucket_id text references storage.buckets (id), name text, owner uuid);
        """)
    localdb.yoyo("apply", conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        uid = conn.execute("select auth.uid()::text").fetchone()
        assert uid == ("00000000-0000-4000-8000-00000000000a",), "auth.uid() was replaced"
        assert conn.execute(
            "select count(*) from information_schema.columns where table_schema = 'auth' "
            "and table_name = 'users' and column_name = 'supabase_only'"
        ).fetchone() == (1,)
        assert conn.execute("select obj_description('auth'::regnamespace)").fetchone() == (None,)
        # Missing helpers are still provided next to Supabase's own.
        assert conn.execute("select to_regprocedure('auth.jwt()') is not null").fetchone() == (True,)
        buckets = conn.execute("select count(*) from storage.buckets where id = 'generations'")
        assert buckets.fetchone() == (1,)
    localdb.yoyo("rollback", conninfo, "--all")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("select to_regclass('auth.users') is not null").fetchone() == (True,)
        assert conn.execute("select to_regclass('storage.objects') is not null").fetchone() == (True,)
        assert conn.execute("select to_regnamespace('paycore') is null").fetchone() == (True,)


def test_source_files_follow_the_layout() -> None:
    """One module's files share a name across schema/, functions/, policies/ and tests/pgtap/."""
    root = localdb.ROOT
    modules = {p.name for p in (root / "schema").glob("*.sql")}
    for d in ("functions", "policies"):
        assert {p.name for p in (root / d).glob("*.sql")} == modules, f"{d}/ and schema/ name other modules"
    tests = {p.name for p in (root / "tests" / "pgtap").glob("*.sql")}
    missing = modules - tests
    assert not missing, f"modules without tests/pgtap/ file: {sorted(missing)}"
    for path in (root / "migrations").glob("*.sql"):
        assert Path(path).read_text().strip(), f"{path.name} is empty"
