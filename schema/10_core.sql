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
    source text not null default 'paycore',
    constraint events_pkey primary key (id),
    constraint events_dedup_key_is_unique unique (dedup_key),
    constraint events_actor_id_fkey foreign key (actor_id)
    references auth.users (id) on delete set null,
    constraint type_is_not_blank check (btrim(type) <> '' and length(type) <= 100),
    constraint app_id_is_not_blank check (btrim(app_id) <> '' and length(app_id) <= 100),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object'),
    constraint source_is_known check (source in ('paycore', 'client'))
);
create index events_actor_id_created_at_idx on public.events (actor_id, created_at);
create index events_type_created_at_idx on public.events (type, created_at);
-- The window scans of get_ecosystem_stats and purge_events (migration 0010, built
-- concurrently): by time, with the columns the statistics read.
create index events_created_at_app_id_type_actor_id_idx on public.events (created_at, app_id, type, actor_id);

comment on table public.events is
'Append-only log of what happened: one row per write that matters. A dedup_key is applied once.';
comment on column public.events.actor_id is
'The user who acted (auth.uid() of the caller) or whom a server-side write concerned.';
comment on column public.events.dedup_key is
'Idempotency key: a second event with the same key is not written. '
'Keys from track_event are stored as track:<user id>:<client key>; keys paycore writes '
'itself start with paycore:.';
comment on column public.events.source is
'Who wrote the event: paycore (its own functions) or client (track_event, on behalf of actor_id).';

-- The namespaces of event types paycore writes itself: clients cannot track them.
create table paycore.reserved_event_namespaces (
    namespace text not null,
    description text not null,
    created_at timestamptz not null default now(),
    constraint reserved_event_namespaces_pkey primary key (namespace),
    constraint namespace_is_a_slug check (namespace ~ '^[a-z][a-z0-9_]{0,62}$')
);
comment on table paycore.reserved_event_namespaces is
'Event type namespaces (the part before the first dot) that only paycore writes: '
'track_event refuses them, so a client cannot forge paycore''s own events. '
'Each module inserts its own.';
insert into paycore.reserved_event_namespaces (namespace, description)
values
('paycore', 'paycore itself'),
('generation', 'generations: started, completed, failed'),
('credit', 'credits and the ledger'),
('credits', 'credits and the ledger'),
('generations', 'generations')
on conflict (namespace) do nothing;

-- Client events per user in the current hour: track_event's rate limit.
create table paycore.client_event_counters (
    user_id uuid not null,
    window_start timestamptz not null,
    events integer not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint client_event_counters_pkey primary key (user_id),
    constraint client_event_counters_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint events_is_positive check (events > 0)
);
comment on table paycore.client_event_counters is
'How many events a user tracked with track_event in the hour starting at window_start '
'(hours of paycore.clock(), UTC): at most paycore.setting(''track_event_hourly_limit'').';

insert into paycore.settings (key, value, description)
values (
    'track_event_hourly_limit', '600',
    'Events one user may record with track_event per clock hour; beyond it PT429 rate_limited.'
)
on conflict (key) do nothing;

-- What each column means, for the API reference (docs/api.md is generated from these).
comment on column public.events.app_id is
'The app the event happened in (e.g. cv, letters, rise), 1 to 100 characters, or null.';
comment on column public.events.type is
'What happened, 1 to 100 characters: paycore''s own types (generation.completed, ...) or a '
'client''s (track_event), which may not use paycore''s namespaces.';
comment on column public.events.subject_type is
'What the event is about (e.g. generation), with subject_id; null for client events.';
comment on column public.events.subject_id is
'The id of the subject (e.g. the generation''s uuid as text).';
comment on column public.events.meta is
'JSON object of context; at most 8 kB from clients.';
