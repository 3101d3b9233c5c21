-- analytics: the nudges sent to users (at most once per user and nudge key), the ecosystem
-- statistics of the event log, and its retention.

create table public.nudges_sent (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    app_id text not null,
    nudge_key text not null,
    channel text,
    meta jsonb not null default '{}',
    sent_at timestamptz not null,
    created_at timestamptz not null default now(),
    constraint nudges_sent_pkey primary key (id),
    constraint nudges_sent_user_id_nudge_key_key unique (user_id, nudge_key),
    constraint nudges_sent_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint nudges_sent_app_id_fkey foreign key (app_id) references public.apps (id),
    constraint nudge_key_is_a_key check (nudge_key ~ '^[a-z0-9][a-z0-9_.:-]{0,199}$'),
    constraint channel_is_a_slug check (channel ~ '^[a-z][a-z0-9_]{0,49}$'),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
comment on table public.nudges_sent is
'Which nudge (an upsell, a reminder, a cross-app suggestion) went to whom, for which app: at most '
'once per user and nudge key. Written by record_nudge (service_role); read by its user only.';
comment on column public.nudges_sent.nudge_key is
'The nudge''s key (lowercase letters, digits, _ . : -; up to 200), e.g. cv.limit_reached.2026-06: '
'a key is sent to a user once.';
comment on column public.nudges_sent.channel is 'How it was sent (email, push, in_app, ...), or null.';
comment on column public.nudges_sent.sent_at is 'When it was sent (paycore.clock()).';

insert into paycore.reserved_event_namespaces (namespace, description)
values ('nudge', 'nudges: sent');
