-- core: the event log every module appends to.

create table public.events (
    id uuid not null default gen_random_uuid(),
    app_id text,
    type text not null,
    actor_id uuid,
    subject_type text,
    subject_id text,
    meta jsonb not null default '{}',
    dedup_key text,
    created_at timestamptz not null default now(),
    constraint events_pkey primary key (id),
    constraint events_dedup_key_is_unique unique (dedup_key),
    constraint events_actor_id_fkey foreign key (actor_id)
    references auth.users (id) on delete set null,
    constraint type_is_not_blank check (btrim(type) <> '' and length(type) <= 100),
    constraint app_id_is_not_blank check (btrim(app_id) <> '' and length(app_id) <= 100),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index events_actor_id_created_at_idx on public.events (actor_id, created_at);
create index events_type_created_at_idx on public.events (type, created_at);

comment on table public.events is
'Append-only log of what happened: one row per write that matters. A dedup_key is applied once.';
comment on column public.events.actor_id is
'The user who acted (auth.uid() of the caller) or whom a server-side write concerned.';
comment on column public.events.dedup_key is
'Idempotency key: a second event with the same key is not written. '
'Keys from track_event are stored as track:<user id>:<client key>.';
