-- base: the Supabase-compatible minimum, and the paycore schema.
--
-- On Supabase every object below already exists and this file changes nothing:
-- each object is created only where it is absent. On plain PostgreSQL (local runs,
-- tests, self-hosting) it creates the roles, auth.users and the storage tables with
-- Supabase's shapes, and the same default privileges Supabase sets on schema public,
-- so that paycore's explicit per-object REVOKEs are tested against the real defaults.
-- Whatever this file creates is marked with the comment 'paycore: compat', which is how
-- the rollback knows what it may drop.

-- Roles. Cluster-wide: created only where absent.
do $$
declare
    v_role text;
begin
    foreach v_role in array array['anon', 'authenticated', 'service_role', 'paycore_webhook'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = v_role) then
            execute format('create role %I nologin noinherit', v_role);
            execute format('comment on role %I is %L', v_role, 'paycore: compat');
            if v_role = 'service_role' then
                alter role service_role bypassrls;
            end if;
        end if;
    end loop;
end;
$$;

-- Supabase's default privileges on schema public, emulated only where this migration
-- created the client roles (plain PostgreSQL). On Supabase they are already in place.
do $$
begin
    if pg_catalog.shobj_description(
        (select oid from pg_catalog.pg_roles where rolname = 'anon'), 'pg_authid'
    ) = 'paycore: compat' then
        grant usage on schema public to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on tables to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on sequences to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on functions to anon, authenticated, service_role;
    end if;
end;
$$;

-- auth: the minimum of Supabase's auth schema that paycore references.
do $$
begin
    if to_regnamespace('auth') is null then
        create schema auth;
        comment on schema auth is 'paycore: compat';
        grant usage on schema auth to anon, authenticated, service_role;
    end if;
    if to_regclass('auth.users') is null then
        create table auth.users (
            instance_id uuid,
            id uuid not null primary key,
            aud varchar(255),
            role varchar(255),
            email varchar(255),
            raw_app_meta_data jsonb,
            raw_user_meta_data jsonb,
            is_anonymous boolean not null default false,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            deleted_at timestamptz
        );
        comment on table auth.users is 'paycore: compat';
    end if;
end;
$$;

-- storage: buckets and objects with Supabase's columns; RLS on, as on Supabase.
do $$
begin
    if to_regnamespace('storage') is null then
        create schema storage;
        comment on schema storage is 'paycore: compat';
        grant usage on schema storage to anon, authenticated, service_role;
    end if;
    if to_regclass('storage.buckets') is null then
        create table storage.buckets (
            id text not null primary key,
            name text not null,
            owner uuid,
            public boolean default false,
            avif_autodetection boolean default false,
            file_size_limit bigint,
            allowed_mime_types text [],
            created_at timestamptz default now(),
            updated_at timestamptz default now()
        );
        create unique index bname on storage.buckets using btree (name);
        alter table storage.buckets enable row level security;
        grant all on table storage.buckets to anon, authenticated, service_role;
        comment on table storage.buckets is 'paycore: compat';
    end if;
    if to_regclass('storage.objects') is null then
        create table storage.objects (
            id uuid not null default gen_random_uuid() primary key,
            bucket_id text references storage.buckets (id),
            name text,
            owner uuid,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            last_accessed_at timestamptz default now(),
            metadata jsonb,
            path_tokens text [] generated always as (string_to_array(name, '/')) stored,
            version text,
            owner_id text
        );
        create unique index bucketid_objname on storage.objects using btree (bucket_id, name);
        alter table storage.objects enable row level security;
        grant all on table storage.objects to anon, authenticated, service_role;
        comment on table storage.objects is 'paycore: compat';
    end if;
end;
$$;

-- paycore: internals, never exposed by PostgREST.
create schema paycore;
comment on schema paycore is
'paycore internals: configuration, the clock, helpers. Not exposed over PostgREST.';

-- Configuration a deployment may change with SQL (as the owner), read by paycore.setting().
create table paycore.settings (
    key text not null,
    value jsonb not null,
    description text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint settings_pkey primary key (key),
    constraint key_is_a_slug check (key ~ '^[a-z][a-z0-9_]{0,62}$')
);
comment on table paycore.settings is
'paycore configuration: one JSON value per key, changed by the owner with SQL '
'(update paycore.settings set value = ... where key = ...). Each module inserts its defaults.';
