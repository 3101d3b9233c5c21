-- credits and generations: balances, the append-only ledger, paid generations,
-- the packages a user can buy, and the storage bucket for generated media.

create table public.credits (
    user_id uuid not null,
    balance bigint not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint credits_pkey primary key (user_id),
    constraint credits_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint balance_is_not_negative check (balance >= 0),
    constraint balance_is_at_most_10e18 check (balance <= 1000000000000000000)
);
comment on table public.credits is
'One balance per user. Invariant: balance = sum(amount) of the user''s credit_transactions, '
'and balance >= 0. Written only by paycore functions.';

create table public.generations (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    type text not null,
    model text not null,
    prompt text,
    status text not null default 'pending',
    result_urls jsonb not null default '[]',
    credits_used bigint not null default 0,
    preview_path text,
    poster_path text,
    preview_status text not null default 'none',
    failure_reason text,
    metadata jsonb not null default '{}',
    idempotency_key text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    completed_at timestamptz,
    constraint generations_pkey primary key (id),
    constraint generations_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint generations_user_id_idempotency_key_key unique (user_id, idempotency_key),
    constraint status_is_known check (status in ('pending', 'processing', 'success', 'failed')),
    constraint preview_status_is_known check (preview_status in ('none', 'pending', 'ready', 'failed')),
    constraint result_urls_is_an_array check (jsonb_typeof(result_urls) = 'array'),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object'),
    constraint credits_used_is_not_negative check (credits_used >= 0),
    constraint type_is_not_blank check (btrim(type) <> ''),
    constraint model_is_not_blank check (btrim(model) <> ''),
    constraint completed_at_is_set_when_final check (
        (status in ('success', 'failed')) = (completed_at is not null)
    ),
    constraint failure_reason_only_when_failed check (failure_reason is null or status = 'failed')
);
create index generations_user_id_created_at_idx on public.generations (user_id, created_at desc);
comment on table public.generations is
'A paid generation: its cost is debited when it starts and refunded once if it fails. '
'pending/processing are open states, success/failed are final.';
comment on column public.generations.credits_used is
'Credits debited at start; refunded exactly once by fail_generation.';
comment on column public.generations.idempotency_key is
'Key of the start_generation call that created the row: a retry returns this row.';

create table public.credit_transactions (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    amount bigint not null,
    balance_after bigint not null,
    type text not null,
    description text,
    metadata jsonb not null default '{}',
    generation_id uuid,
    idempotency_key text,
    created_at timestamptz not null default now(),
    constraint credit_transactions_pkey primary key (id),
    constraint credit_transactions_user_id_fkey foreign key (user_id)
    references public.credits (user_id) on delete cascade,
    constraint credit_transactions_generation_id_fkey foreign key (generation_id)
    references public.generations (id),
    constraint credit_transactions_user_id_idempotency_key_key unique (user_id, idempotency_key),
    constraint amount_is_not_zero check (amount <> 0),
    constraint balance_after_is_not_negative check (balance_after >= 0),
    constraint type_is_not_blank check (btrim(type) <> '' and length(type) <= 50),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object')
);
create index credit_transactions_user_id_created_at_idx
on public.credit_transactions (user_id, created_at desc);
create index credit_transactions_generation_id_idx
on public.credit_transactions (generation_id) where generation_id is not null;
comment on table public.credit_transactions is
'The credit ledger, append-only: rows are never updated or deleted, except with their auth user. '
'A (user_id, idempotency_key) pair is applied at most once.';
comment on column public.credit_transactions.balance_after is
'The user''s balance right after this row was applied.';
comment on column public.credit_transactions.idempotency_key is
'Caller''s key (adjust_credits), or a key paycore writes itself, in the reserved namespace '
'paycore: (paycore:generation:<id>:debit / :refund) that no caller can use.';

create table public.credit_packages (
    id text not null,
    name text not null,
    credits bigint not null,
    price_amount bigint not null,
    currency text not null default 'usd',
    stripe_price_id text,
    active boolean not null default true,
    sort_order integer not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint credit_packages_pkey primary key (id),
    constraint credit_packages_stripe_price_id_key unique (stripe_price_id),
    constraint credits_is_positive check (credits > 0),
    constraint price_amount_is_not_negative check (price_amount >= 0),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint id_is_a_slug check (id ~ '^[a-z0-9_]{1,64}$')
);
comment on table public.credit_packages is
'Credit packages for sale. The credits granted for a paid checkout come from here, '
'never from Checkout Session metadata. price_amount is in minor units of currency.';

insert into public.credit_packages (id, name, credits, price_amount, currency, sort_order)
values
('pkg_100_credits', '100 credits', 100, 1000, 'usd', 10),
('pkg_500_credits', '500 credits', 500, 4500, 'usd', 20),
('pkg_2000_credits', '2000 credits', 2000, 16000, 'usd', 30)
on conflict (id) do nothing;

-- Generated media: public read, 50 MB, images and videos only.
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values (
    'generations', 'generations', true, 52428800,
    array[
        'image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/avif',
        'video/mp4', 'video/webm', 'video/quicktime'
    ]
)
on conflict (id) do nothing;

-- What each column means, for the API reference (docs/api.md is generated from these).
comment on column public.credits.balance is
'Credits the user holds now: never negative, at most 10^18, always the sum of its ledger rows.';
comment on column public.generations.type is
'The kind of output (image, video, ...), 1 to 100 characters.';
comment on column public.generations.model is
'The model that generates it, 1 to 100 characters.';
comment on column public.generations.status is
'pending or processing (open: complete_generation or fail_generation may follow), success or '
'failed (final).';
comment on column public.generations.result_urls is
'JSON array of the result URLs (strings), set by complete_generation.';
comment on column public.generations.preview_path is
'Storage path (bucket generations) of a preview image, set by complete_generation.';
comment on column public.generations.poster_path is
'Storage path (bucket generations) of a video poster image, set by complete_generation.';
comment on column public.generations.preview_status is
'none, pending, ready (complete_generation was given a preview path) or failed.';
comment on column public.generations.failure_reason is
'Why the generation failed, set by fail_generation; null otherwise.';
comment on column public.generations.completed_at is
'When the generation reached its final state (paycore.clock()); null while open.';
comment on column public.credit_transactions.amount is
'Credits added (> 0) or debited (< 0) by this row; never 0.';
comment on column public.credit_transactions.type is
'What the change was, 1 to 50 characters: the caller''s label (purchase, spend, ...) or '
'paycore''s (generation, refund).';
comment on column public.credit_transactions.description is
'Text for people, null or up to 1000 characters.';
comment on column public.credit_transactions.metadata is
'JSON object of context, at most 8 kB (e.g. the Stripe session or the model).';
comment on column public.credit_transactions.generation_id is
'The generation whose debit or refund this row is; null for other changes.';
comment on column public.credit_packages.id is
'Stable package id (a slug): what a credit checkout names as package_id.';
comment on column public.credit_packages.credits is
'Credits granted for one paid purchase of the package.';
comment on column public.credit_packages.price_amount is
'Price in minor units (cents) of currency.';
comment on column public.credit_packages.currency is
'ISO 4217 currency code, lowercase (usd, eur, ...).';
comment on column public.credit_packages.stripe_price_id is
'The Stripe Price (price_...) sold for this package: set per deployment, null until then.';
comment on column public.credit_packages.active is
'Listed to clients and sellable; inactive packages stay for the history of purchases.';
comment on column public.credit_packages.sort_order is
'Order in which clients list the packages (ascending).';
