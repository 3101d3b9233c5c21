-- depends: 0002.create-core
-- create-credits: schema/20_credits.sql, functions/20_credits.sql, policies/20_credits.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

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
    constraint balance_is_not_negative check (balance >= 0)
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
'The credit ledger, append-only: rows are never updated or deleted (except with their user). '
'A (user_id, idempotency_key) pair is applied at most once.';
comment on column public.credit_transactions.balance_after is
'The user''s balance right after this row was applied.';
comment on column public.credit_transactions.idempotency_key is
'Caller''s key (adjust_credits), or generation:<id>:debit / generation:<id>:refund.';

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

-- credits and generations: the ledger write, adjust_credits, balances, and the
-- start / complete / fail lifecycle of a paid generation.

create function paycore.apply_credit_change(
    p_user_id uuid,
    p_amount bigint,
    p_type text,
    p_description text,
    p_metadata jsonb,
    p_generation_id uuid,
    p_idempotency_key text,
    out o_balance bigint,
    out o_transaction_id uuid
)
language plpgsql volatile
as $$
declare
    v_balance bigint;
begin
    -- The check and the write in one statement: the row lock serialises writers of one
    -- user, and a debit beyond the balance matches no row.
    update public.credits as c
    set balance = c.balance + p_amount
    where c.user_id = p_user_id and c.balance + p_amount >= 0
    returning c.balance into o_balance;

    if not found then
        if not exists (select 1 from auth.users as u where u.id = p_user_id) then
            raise exception 'user % does not exist', p_user_id
            using errcode = 'PT404', hint = 'not_found';
        end if;
        if p_amount < 0 then
            select c.balance into v_balance from public.credits as c where c.user_id = p_user_id;
            raise exception 'not enough credits: balance %, needed %', coalesce(v_balance, 0), -p_amount
            using errcode = 'PT402', hint = 'insufficient_credits',
            detail = json_build_object('balance', coalesce(v_balance, 0), 'needed', -p_amount)::text;
        end if;
        -- The user's first credit.
        insert into public.credits as c (user_id, balance)
        values (p_user_id, p_amount)
        on conflict (user_id) do update set balance = c.balance + excluded.balance
        returning c.balance into o_balance;
    end if;

    insert into public.credit_transactions (
        user_id, amount, balance_after, type, description, metadata, generation_id, idempotency_key
    )
    values (
        p_user_id, p_amount, o_balance, p_type, p_description, p_metadata, p_generation_id,
        p_idempotency_key
    )
    returning id into o_transaction_id;
end;
$$;
comment on function paycore.apply_credit_change(uuid, bigint, text, text, jsonb, uuid, text) is
'Applies one ledger row and the balance it implies, atomically: PT404 for an unknown user, '
'PT402 (nothing written) for a debit beyond the balance. Internal.';

create function public.adjust_credits(
    p_user_id uuid,
    p_amount bigint,
    p_type text,
    p_description text default null,
    p_metadata jsonb default '{}',
    p_idempotency_key text default null
)
returns table (balance bigint, transaction_id uuid)
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_previous public.credit_transactions;
    v_change record;
begin
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_amount is null or p_amount = 0 or abs(p_amount) > 1000000000000000 then
        raise exception 'p_amount must be a non-zero integer of at most 10^15 in size'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_type is null or btrim(p_type) = '' or length(p_type) > 50 then
        raise exception 'p_type must be 1 to 50 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'p_metadata must be a JSON object'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    if p_idempotency_key is not null then
        if p_idempotency_key = '' or length(p_idempotency_key) > 200 then
            raise exception 'p_idempotency_key must be null or 1 to 200 characters'
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
        perform pg_advisory_xact_lock(hashtextextended(p_user_id::text || '/' || p_idempotency_key, 0));
        select t.* into v_previous
        from public.credit_transactions as t
        where t.user_id = p_user_id and t.idempotency_key = p_idempotency_key;
        if found then
            if v_previous.amount = p_amount
                and v_previous.type = p_type
                and v_previous.description is not distinct from p_description
                and v_previous.metadata = p_metadata
                and v_previous.generation_id is null then
                balance := v_previous.balance_after;
                transaction_id := v_previous.id;
                return next;
                return;
            end if;
            raise exception 'idempotency key % was used with other arguments', p_idempotency_key
            using errcode = 'PT409', hint = 'idempotency_conflict';
        end if;
    end if;

    -- Called as an expression, and the result returned with return next: on this hot path a
    -- FunctionScan plus a RETURN QUERY tuplestore cost about 25 us a call (bench/credits.py).
    v_change := paycore.apply_credit_change(
        p_user_id, p_amount, p_type, p_description, p_metadata, null, p_idempotency_key
    );
    balance := v_change.o_balance;
    transaction_id := v_change.o_transaction_id;
    return next;
end;
$$;
comment on function public.adjust_credits(uuid, bigint, text, text, jsonb, text) is
'Adds (amount > 0) or debits (amount < 0) credits and appends the ledger row, atomically. '
'A debit beyond the balance is PT402 and writes nothing. The same idempotency key with the '
'same arguments returns the first result; with other arguments PT409. service_role only; '
'SECURITY DEFINER because no client role may write credits or the ledger.';

create function public.get_user_balance(p_user_id uuid default null)
returns bigint
language plpgsql stable security definer
set search_path = ''
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_balance bigint;
begin
    select c.balance into v_balance from public.credits as c where c.user_id = v_uid;
    if not found then
        if not exists (select 1 from auth.users as u where u.id = v_uid) then
            raise exception 'user % does not exist', v_uid
            using errcode = 'PT404', hint = 'not_found';
        end if;
        return 0;
    end if;
    return v_balance;
end;
$$;
comment on function public.get_user_balance(uuid) is
'Balance of the caller (authenticated: null or its own id) or of any user (service_role); '
'0 for a user who never had credits.';

create function public.start_generation(
    p_user_id uuid,
    p_type text,
    p_model text,
    p_prompt text,
    p_cost bigint,
    p_metadata jsonb default '{}',
    p_idempotency_key text default null
)
returns public.generations
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_generation public.generations;
begin
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_type is null or btrim(p_type) = '' or length(p_type) > 100
        or p_model is null or btrim(p_model) = '' or length(p_model) > 100 then
        raise exception 'p_type and p_model must be 1 to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_cost is null or p_cost < 0 or p_cost > 1000000000000000 then
        raise exception 'p_cost must be an integer from 0 to 10^15'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'p_metadata must be a JSON object'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_idempotency_key is not null and (p_idempotency_key = '' or length(p_idempotency_key) > 200) then
        raise exception 'p_idempotency_key must be null or 1 to 200 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if not exists (select 1 from auth.users as u where u.id = p_user_id) then
        raise exception 'user % does not exist', p_user_id
        using errcode = 'PT404', hint = 'not_found';
    end if;

    if p_idempotency_key is not null then
        perform pg_advisory_xact_lock(
            hashtextextended(p_user_id::text || '/generation/' || p_idempotency_key, 0)
        );
        select g.* into v_generation
        from public.generations as g
        where g.user_id = p_user_id and g.idempotency_key = p_idempotency_key;
        if found then
            if v_generation.type = p_type
                and v_generation.model = p_model
                and v_generation.prompt is not distinct from p_prompt
                and v_generation.credits_used = p_cost
                and v_generation.metadata = p_metadata then
                return v_generation;
            end if;
            raise exception 'idempotency key % was used with other arguments', p_idempotency_key
            using errcode = 'PT409', hint = 'idempotency_conflict';
        end if;
    end if;

    insert into public.generations (
        user_id, type, model, prompt, status, credits_used, metadata, idempotency_key
    )
    values (p_user_id, p_type, p_model, p_prompt, 'processing', p_cost, p_metadata, p_idempotency_key)
    returning * into v_generation;

    if p_cost > 0 then
        -- PT402 here aborts the whole call: the generation above is not created.
        perform paycore.apply_credit_change(
            p_user_id, -p_cost, 'generation', 'Generation with ' || p_model,
            jsonb_build_object('model', p_model, 'type', p_type), v_generation.id,
            'generation:' || v_generation.id || ':debit'
        );
    end if;

    perform paycore.log_event(
        p_type => 'generation.started', p_actor_id => p_user_id,
        p_subject_type => 'generation', p_subject_id => v_generation.id::text,
        p_meta => jsonb_build_object('model', p_model, 'type', p_type, 'credits', p_cost)
    );
    return v_generation;
end;
$$;
comment on function public.start_generation(uuid, text, text, text, bigint, jsonb, text) is
'Debits p_cost and creates a processing generation in one transaction; PT402 creates '
'nothing. A repeated idempotency key with the same arguments returns the first generation. '
'service_role only; SECURITY DEFINER because clients cannot write credits or generations.';

create function paycore.find_open_generation_error(p_generation_id uuid)
returns void
language plpgsql stable
as $$
declare
    v_status text;
begin
    select g.status into v_status from public.generations as g where g.id = p_generation_id;
    if not found then
        raise exception 'generation % does not exist', p_generation_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    raise exception 'generation % is already %', p_generation_id, v_status
    using errcode = 'PT409', hint = 'invalid_state';
end;
$$;
comment on function paycore.find_open_generation_error(uuid) is
'Raises why a generation is not open: PT404 not_found or PT409 invalid_state (final state).';

create function public.complete_generation(
    p_generation_id uuid,
    p_result_urls jsonb,
    p_preview_path text default null,
    p_poster_path text default null
)
returns public.generations
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_generation public.generations;
begin
    if p_generation_id is null then
        raise exception 'p_generation_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_result_urls is null or jsonb_typeof(p_result_urls) <> 'array' then
        raise exception 'p_result_urls must be a JSON array'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    update public.generations as g
    set
        status = 'success',
        result_urls = p_result_urls,
        preview_path = coalesce(p_preview_path, g.preview_path),
        poster_path = coalesce(p_poster_path, g.poster_path),
        preview_status = case when p_preview_path is not null then 'ready' else g.preview_status end,
        completed_at = paycore.clock()
    where g.id = p_generation_id and g.status in ('pending', 'processing')
    returning g.* into v_generation;
    if not found then
        perform paycore.find_open_generation_error(p_generation_id);
    end if;

    perform paycore.log_event(
        p_type => 'generation.completed', p_actor_id => v_generation.user_id,
        p_subject_type => 'generation', p_subject_id => v_generation.id::text,
        p_meta => jsonb_build_object('results', jsonb_array_length(p_result_urls))
    );
    return v_generation;
end;
$$;
comment on function public.complete_generation(uuid, jsonb, text, text) is
'Marks an open generation successful with its results. From a final state: PT409. '
'service_role only.';

create function public.fail_generation(p_generation_id uuid, p_reason text)
returns public.generations
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_generation public.generations;
begin
    if p_generation_id is null then
        raise exception 'p_generation_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_reason is null or btrim(p_reason) = '' or length(p_reason) > 2000 then
        raise exception 'p_reason must be 1 to 2000 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    -- Only one caller can move the row out of an open state: the refund follows once.
    update public.generations as g
    set status = 'failed', failure_reason = p_reason, completed_at = paycore.clock()
    where g.id = p_generation_id and g.status in ('pending', 'processing')
    returning g.* into v_generation;
    if not found then
        perform paycore.find_open_generation_error(p_generation_id);
    end if;

    if v_generation.credits_used > 0 then
        perform paycore.apply_credit_change(
            v_generation.user_id, v_generation.credits_used, 'refund',
            'Refund for failed generation', jsonb_build_object('reason', p_reason),
            v_generation.id, 'generation:' || v_generation.id || ':refund'
        );
    end if;

    perform paycore.log_event(
        p_type => 'generation.failed', p_actor_id => v_generation.user_id,
        p_subject_type => 'generation', p_subject_id => v_generation.id::text,
        p_meta => jsonb_build_object('reason', p_reason, 'refunded', v_generation.credits_used)
    );
    return v_generation;
end;
$$;
comment on function public.fail_generation(uuid, text) is
'Marks an open generation failed and refunds its credits_used exactly once. From a final '
'state: PT409. service_role only.';

create function paycore.tg_credit_transactions__append_only()
returns trigger
language plpgsql
as $$
begin
    -- A delete cascaded from deleting the user (trigger depth > 1) is the only way out.
    if tg_op = 'DELETE' and pg_trigger_depth() > 1 then
        return old;
    end if;
    raise exception 'credit_transactions is append-only'
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg_credit_transactions__append_only() is
'Refuses UPDATE, DELETE and TRUNCATE of ledger rows, except deletes cascaded from the user.';

create trigger credit_transactions_append_only
before update or delete on public.credit_transactions
for each row execute function paycore.tg_credit_transactions__append_only();
create trigger credit_transactions_no_truncate
before truncate on public.credit_transactions
for each statement execute function paycore.tg_credit_transactions__append_only();

create trigger credits_set_updated_at
before update on public.credits
for each row execute function paycore.tg__set_updated_at();
create trigger generations_set_updated_at
before update on public.generations
for each row execute function paycore.tg__set_updated_at();
create trigger credit_packages_set_updated_at
before update on public.credit_packages
for each row execute function paycore.tg__set_updated_at();

-- credits and generations: clients read their own rows; every write is a function.

alter table public.credits enable row level security;
revoke all on table public.credits from public, anon, authenticated, service_role;
grant select on table public.credits to authenticated, service_role;
create policy credits_select_own on public.credits
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.credit_transactions enable row level security;
revoke all on table public.credit_transactions from public, anon, authenticated, service_role;
grant select on table public.credit_transactions to authenticated, service_role;
create policy credit_transactions_select_own on public.credit_transactions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.generations enable row level security;
revoke all on table public.generations from public, anon, authenticated, service_role;
grant select on table public.generations to authenticated, service_role;
create policy generations_select_own on public.generations
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.credit_packages enable row level security;
revoke all on table public.credit_packages from public, anon, authenticated, service_role;
grant select on table public.credit_packages to anon, authenticated, service_role;
create policy credit_packages_select_active on public.credit_packages
for select to anon, authenticated
using (active);

-- Storage bucket 'generations': anyone reads; a signed-in user writes and deletes only
-- under its own folder <auth.uid()>/...
create policy generations_bucket_select on storage.objects
for select to anon, authenticated
using (bucket_id = 'generations');
create policy generations_bucket_insert_own on storage.objects
for insert to authenticated
with check (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
);
create policy generations_bucket_update_own on storage.objects
for update to authenticated
using (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
)
with check (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
);
create policy generations_bucket_delete_own on storage.objects
for delete to authenticated
using (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
);

revoke all on function paycore.apply_credit_change(uuid, bigint, text, text, jsonb, uuid, text) from public;
revoke all on function paycore.find_open_generation_error(uuid) from public;
revoke all on function paycore.tg_credit_transactions__append_only() from public;

revoke all on function public.adjust_credits(uuid, bigint, text, text, jsonb, text)
from public, anon, authenticated, service_role;
grant execute on function public.adjust_credits(uuid, bigint, text, text, jsonb, text) to service_role;

revoke all on function public.get_user_balance(uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_user_balance(uuid) to authenticated, service_role;

revoke all on function public.start_generation(uuid, text, text, text, bigint, jsonb, text)
from public, anon, authenticated, service_role;
grant execute on function public.start_generation(uuid, text, text, text, bigint, jsonb, text)
to service_role;

revoke all on function public.complete_generation(uuid, jsonb, text, text)
from public, anon, authenticated, service_role;
grant execute on function public.complete_generation(uuid, jsonb, text, text) to service_role;

revoke all on function public.fail_generation(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.fail_generation(uuid, text) to service_role;
