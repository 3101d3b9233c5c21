-- coaching data: readings with their numbered versions, and partner matchings that both
-- users of a pair read.

create table public.coach_readings (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    reading_type text not null,
    status text not null default 'active',
    current_version integer not null default 1,
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint coach_readings_pkey primary key (id),
    constraint coach_readings_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint reading_type_is_a_slug check (reading_type ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    constraint status_is_known check (status in ('active', 'archived')),
    constraint current_version_is_positive check (current_version >= 1),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object')
);
create index coach_readings_user_id_created_at_idx on public.coach_readings (user_id, created_at desc);
comment on table public.coach_readings is
'A coaching reading of one user; its text lives in reading_versions, numbered 1..current_version '
'with no gap. Read by its user only; written by create_reading and add_reading_version.';
comment on column public.coach_readings.reading_type is
'What kind of reading it is (a slug: lowercase letters, digits, _ . -; up to 100 characters).';
comment on column public.coach_readings.status is 'active or archived.';
comment on column public.coach_readings.current_version is
'The number of the latest version: versions are 1..current_version.';
comment on column public.coach_readings.metadata is 'JSON object of context, at most 8 kB.';

create table public.reading_versions (
    id uuid not null default gen_random_uuid(),
    reading_id uuid not null,
    user_id uuid not null,
    version_number integer not null,
    content text not null,
    created_at timestamptz not null default now(),
    constraint reading_versions_pkey primary key (id),
    constraint reading_versions_reading_id_version_number_key unique (reading_id, version_number),
    constraint reading_versions_reading_id_fkey foreign key (reading_id)
    references public.coach_readings (id) on delete cascade,
    constraint reading_versions_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint version_number_is_positive check (version_number >= 1),
    constraint content_is_at_most_100000_characters check (length(content) <= 100000)
);
comment on table public.reading_versions is
'The versions of a reading, append-only: (reading_id, version_number) is unique and numbers run '
'1..n without a gap. user_id is the reading''s user (for RLS).';
comment on column public.reading_versions.version_number is 'Version number: 1 for the first.';
comment on column public.reading_versions.content is 'The reading''s text, 1 to 100000 characters.';

create table public.partner_matchings (
    id uuid not null default gen_random_uuid(),
    user_id_1 uuid not null,
    user_id_2 uuid not null,
    matching_type text not null,
    result jsonb not null default '{}',
    status text not null default 'completed',
    metadata jsonb not null default '{}',
    created_by uuid,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint partner_matchings_pkey primary key (id),
    constraint partner_matchings_pair_type_key unique (user_id_1, user_id_2, matching_type),
    constraint partner_matchings_user_id_1_fkey foreign key (user_id_1)
    references auth.users (id) on delete cascade,
    constraint partner_matchings_user_id_2_fkey foreign key (user_id_2)
    references auth.users (id) on delete cascade,
    constraint partner_matchings_created_by_fkey foreign key (created_by)
    references auth.users (id) on delete set null,
    constraint pair_is_ordered check (user_id_1 < user_id_2),
    constraint matching_type_is_a_slug check (matching_type ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    constraint status_is_known check (status in ('completed', 'archived')),
    constraint result_is_an_object check (jsonb_typeof(result) = 'object'),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object')
);
create index partner_matchings_user_id_2_idx on public.partner_matchings (user_id_2);
comment on table public.partner_matchings is
'The matching of two users, one row per pair and matching_type: the pair is stored in one order '
'(user_id_1 < user_id_2), so A with B and B with A are the same row. Read by both users; '
'written by save_matching (the latest result wins).';
comment on column public.partner_matchings.user_id_1 is 'The smaller user id of the pair.';
comment on column public.partner_matchings.user_id_2 is 'The larger user id of the pair.';
comment on column public.partner_matchings.matching_type is
'What kind of matching (a slug, up to 100 characters).';
comment on column public.partner_matchings.result is 'The matching''s result: a JSON object, at most 64 kB.';
comment on column public.partner_matchings.status is 'completed or archived.';
comment on column public.partner_matchings.created_by is
'Who saved the latest result (one of the pair; null when the service did).';

insert into paycore.reserved_event_namespaces (namespace, description)
values
('reading', 'coaching readings: created, versioned'),
('matching', 'partner matchings: saved');
