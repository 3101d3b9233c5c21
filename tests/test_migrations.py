"""migrations/ is what a database receives: it must apply cleanly with yoyo, apply twice
without change, roll back and re-apply, leave Supabase's own objects alone, and build
exactly the catalog that schema/ + functions/ + policies/ describe (the drift test)."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import psycopg
import pytest

import localdb

MIGRATIONS = localdb.MIGRATIONS
SCHEMAS = ("public", "paycore", "auth", "storage")
# Supabase Storage's delete guard, emulated: test databases have it, as Supabase projects do.
STORAGE_GUARD = Path(__file__).resolve().parent / "supabase" / "storage_guard.sql"

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
    localdb.psql_file(source, STORAGE_GUARD)  # as in the migrated test database
    assert_same_catalog(catalog(db), catalog(source), "migrations/", "schema/+functions/+policies/")


def test_second_apply_changes_nothing(make_database) -> None:
    conninfo = make_database("reapply")
    localdb.yoyo("apply", conninfo)
    first = catalog(conninfo)
    applied = localdb.yoyo("apply", conninfo, "-v")
    assert "Applying" not in applied.stdout + applied.stderr
    assert catalog(conninfo) == first


def forward_migrations() -> list[str]:
    return sorted(p.name[:-4] for p in MIGRATIONS.glob("[0-9]*.sql") if not p.name.endswith(".rollback.sql"))


def has_storage_guard(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "select count(*) = 2 from pg_trigger"
            " where tgname in ('protect_buckets_delete', 'protect_objects_delete')"
        ).fetchone()[0]


def test_rollback_all_then_reapply(make_database) -> None:
    """yoyo apply, then yoyo rollback --all --batch, with Supabase Storage's delete guard in
    place (a rollback that deletes storage rows without storage.allow_delete_query fails)."""
    conninfo = make_database("rollback")
    localdb.yoyo("apply", conninfo)
    localdb.psql_file(conninfo, STORAGE_GUARD)
    assert has_storage_guard(conninfo)
    applied = catalog(conninfo)
    localdb.yoyo("rollback", conninfo, "--all")
    left = [line for line in catalog(conninfo) if not line.startswith("schema public ")]
    assert left == [], "rollback left objects behind:\n" + "\n".join(left[:50])
    localdb.yoyo("apply", conninfo)
    localdb.psql_file(conninfo, STORAGE_GUARD)
    assert_same_catalog(catalog(conninfo), applied, "re-applied", "applied")


def test_each_rollback_restores_the_previous_catalog(make_database) -> None:
    """Rolling back the last migration gives exactly the catalog of the migrations before it,
    for every migration: a later migration's rollback restores what it replaced."""
    names = forward_migrations()
    conninfo = make_database("steps")
    before: list[str] | None = None
    for name in names:
        localdb.yoyo("apply", conninfo, "--revision", name)
        localdb.psql_file(conninfo, STORAGE_GUARD)
        after = catalog(conninfo)
        if before is not None:
            localdb.yoyo("rollback", conninfo, "--revision", name)
            localdb.psql_file(conninfo, STORAGE_GUARD)
            assert_same_catalog(catalog(conninfo), before, f"after rollback of {name}", "before it")
            localdb.yoyo("apply", conninfo, "--revision", name)
            localdb.psql_file(conninfo, STORAGE_GUARD)
            assert catalog(conninfo) == after, f"re-applying {name} gives another catalog"
        before = after


def test_existing_supabase_objects_are_left_alone(make_database) -> None:
    """On Supabase auth, storage and their functions exist: the base migration must not
    replace them, and its rollback must not drop them."""
    conninfo = make_database("supabase")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("""
            create schema auth;
            create table auth.users (id uuid primary key, email text, raw_user_meta_data jsonb,
                deleted_at timestamptz, supabase_only text);
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


SUPABASE_OWNER = "paycore_test_supabase_postgres"
SUPABASE_STORAGE_ADMIN = "paycore_test_supabase_storage_admin"
SUPABASE_AUTH_ADMIN = "paycore_test_supabase_auth_admin"

# A database shaped like a hosted Supabase project, as far as paycore meets it: auth and
# storage exist and belong to other roles, storage refuses direct deletes, and the role that
# applies migrations (Supabase's `postgres`) is not a superuser: NOSUPERUSER CREATEDB
# CREATEROLE BYPASSRLS, a member of anon, authenticated and service_role. Supabase lets it
# manage policies on storage.objects through its supautils extension; here that is emulated
# by membership in the storage tables' owner.
SUPABASE_SHAPE = f"""
create role {SUPABASE_STORAGE_ADMIN} nologin;
create role {SUPABASE_OWNER} login nosuperuser createdb createrole bypassrls
    in role anon, authenticated, service_role, {SUPABASE_STORAGE_ADMIN};
grant create on schema public to {SUPABASE_OWNER};

create role {SUPABASE_AUTH_ADMIN} nologin;
create schema auth authorization {SUPABASE_AUTH_ADMIN};
set role {SUPABASE_AUTH_ADMIN};
create table auth.users (
    id uuid primary key, email text, raw_user_meta_data jsonb, deleted_at timestamptz,
    supabase_only text
);
create function auth.uid() returns uuid language sql stable
as $$ select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
create function auth.role() returns text language sql stable as $$ select 'x'::text $$;
create function auth.email() returns text language sql stable as $$ select 'x'::text $$;
create function auth.jwt() returns jsonb language sql stable as $$ select '{{}}'::jsonb $$;
grant usage on schema auth to {SUPABASE_OWNER}, anon, authenticated, service_role;
grant select, references, trigger on auth.users to {SUPABASE_OWNER};
grant execute on all functions in schema auth to public;
reset role;

create schema storage authorization {SUPABASE_STORAGE_ADMIN};
set role {SUPABASE_STORAGE_ADMIN};
create table storage.buckets (id text primary key, name text not null, public boolean,
    file_size_limit bigint, allowed_mime_types text[], owner uuid);
create table storage.objects (id uuid primary key default gen_random_uuid(),
    bucket_id text references storage.buckets (id), name text, owner uuid);
alter table storage.objects enable row level security;
create function storage.foldername(name text) returns text[] language sql immutable
as $$ select (string_to_array(name, '/'))[1:array_length(string_to_array(name, '/'), 1) - 1] $$;
reset role;
grant usage on schema storage to {SUPABASE_OWNER}, anon, authenticated, service_role;
grant all on storage.buckets, storage.objects to {SUPABASE_OWNER};

-- Supabase keeps extensions in schema extensions, where its postgres may create them.
create schema extensions;
grant usage on schema extensions to anon, authenticated, service_role;
grant create on schema extensions to {SUPABASE_OWNER};
"""


def test_applies_and_rolls_back_on_a_supabase_shaped_database(db: str, make_database, pg_server: str) -> None:
    """yoyo apply and yoyo rollback --all --batch as a role that is not a superuser, on a
    database where auth and storage belong to others and storage refuses direct deletes.
    (``db`` first: the client roles are cluster-wide, created by the first database's 0001.)"""
    conninfo = make_database("supabase_shape")
    owner = psycopg.conninfo.make_conninfo(conninfo, user=SUPABASE_OWNER)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SUPABASE_SHAPE)
            conn.execute(f"grant create on database {conn.info.dbname} to {SUPABASE_OWNER}")
        localdb.psql_file(conninfo, STORAGE_GUARD)
        localdb.yoyo("apply", owner)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute(
                "select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'paycore'"
            ).fetchone() == (SUPABASE_OWNER,)
            # Supabase Auth signs a user up as its own role, which has no right on public:
            # the profile comes from paycore's trigger all the same.
            with conn.transaction():
                conn.execute(f"set local role {SUPABASE_AUTH_ADMIN}")
                user = conn.execute(
                    "insert into auth.users (id, email, raw_user_meta_data) "
                    "values (gen_random_uuid(), 's@example.test', '{\"full_name\": \"S\"}') returning id"
                ).fetchone()[0]
                conn.execute("update auth.users set email = 't@example.test' where id = %s", (user,))
                holder = conn.execute(
                    "insert into auth.users (id, email) "
                    "values (gen_random_uuid(), 'h@example.test') returning id"
                ).fetchone()[0]
            assert conn.execute(
                "select email, full_name from public.profiles where id = %s", (user,)
            ).fetchone() == ("t@example.test", "S")
            # What a Supabase client does: PostgREST's set local role, then an RPC.
            with conn.transaction():
                conn.execute("set local role service_role")
                balance = conn.execute("select balance from public.adjust_credits(%s, 5, 'gift')", (user,))
                assert balance.fetchone() == (5,)
            with conn.transaction():
                conn.execute("select set_config('request.jwt.claims', %s, true)",
                             (json.dumps({"sub": str(user), "role": "authenticated"}),))
                conn.execute("set local role authenticated")
                assert conn.execute("select public.get_user_balance()").fetchone() == (5,)
                used = conn.execute("select public.check_usage_limit(null, 'cv_generations') ->> 'used'")
                assert used.fetchone() == ("1",)
                voucher = conn.execute(
                    "select id from public.issue_voucher('consulting.session', 'S', 60, "
                    "now() + interval '1 day', now() + interval '2 days', 1000, 'eur')"
                ).fetchone()[0]
            # The marketplace's exclusion constraint needs btree_gist, created by 0012 in extensions.
            with conn.transaction():
                conn.execute("select set_config('request.jwt.claims', %s, true)",
                             (json.dumps({"sub": str(holder), "role": "authenticated"}),))
                conn.execute("set local role authenticated")
                booked = conn.execute(
                    "select status from public.book_voucher("
                    "%s, date_trunc('hour', now()) + interval '25 hours')",
                    (voucher,),
                )
                assert booked.fetchone() == ("booked",)
            buckets = conn.execute("select count(*) from storage.buckets where id = 'generations'")
            assert buckets.fetchone() == (1,)
            with conn.transaction():
                conn.execute(f"set local role {SUPABASE_AUTH_ADMIN}")
                conn.execute("delete from auth.users where id = %s", (user,))
        localdb.yoyo("rollback", owner, "--all")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("select to_regnamespace('paycore') is null").fetchone() == (True,)
            assert conn.execute("select to_regclass('public.credits') is null").fetchone() == (True,)
            assert conn.execute("select count(*) from storage.buckets").fetchone() == (0,), \
                "the rollback of 0003 did not remove its bucket"
            assert has_storage_guard(conninfo), "Supabase's storage guard is gone"
            assert conn.execute(
                "select count(*) from pg_policies where schemaname = 'storage'"
            ).fetchone() == (0,)
            assert conn.execute("select to_regclass('auth.users') is not null").fetchone() == (True,)
            # 0012's btree_gist goes with its rollback; Supabase's schema extensions stays.
            assert conn.execute(
                "select count(*) from pg_extension where extname = 'btree_gist'"
            ).fetchone() == (0,)
            assert conn.execute("select to_regnamespace('extensions') is not null").fetchone() == (True,)
    finally:
        localdb.drop_database(pg_server, psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for role in (SUPABASE_OWNER, SUPABASE_STORAGE_ADMIN, SUPABASE_AUTH_ADMIN):
                conn.execute(f"drop role if exists {role}")


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
