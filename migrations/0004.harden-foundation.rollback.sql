-- Undoes 0004.harden-foundation: the functions, comments and policies of 0001-0003 as they
-- were, and nothing 0004 added. Rows written since keep their values (ledger keys under
-- paycore:, events from clients), which the 0003 functions read as ordinary rows.
drop policy generations_bucket_select_own on storage.objects;
create policy generations_bucket_select on storage.objects
for select to anon, authenticated
using (bucket_id = 'generations');

drop trigger credits_delete_with_user on public.credits;
drop trigger credits_no_truncate on public.credits;
alter table public.credits drop constraint balance_is_at_most_10e18;

create or replace function paycore.tg_credit_transactions__append_only()
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

create or replace function paycore.apply_credit_change(
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

create or replace function public.adjust_credits(
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

create or replace function public.get_user_balance(p_user_id uuid default null)
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

create or replace function public.start_generation(
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

create or replace function public.complete_generation(
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

create or replace function public.fail_generation(p_generation_id uuid, p_reason text)
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

revoke all on function paycore.tg_credit_transactions__append_only() from public;
create or replace trigger credit_transactions_append_only
before update or delete on public.credit_transactions
for each row execute function paycore.tg_credit_transactions__append_only();
create or replace trigger credit_transactions_no_truncate
before truncate on public.credit_transactions
for each statement execute function paycore.tg_credit_transactions__append_only();

comment on table public.credit_transactions is
'The credit ledger, append-only: rows are never updated or deleted (except with their user). '
'A (user_id, idempotency_key) pair is applied at most once.';
comment on column public.credit_transactions.idempotency_key is
'Caller''s key (adjust_credits), or generation:<id>:debit / generation:<id>:refund.';

drop trigger client_event_counters_set_updated_at on paycore.client_event_counters;
drop table paycore.client_event_counters;
drop table paycore.reserved_event_namespaces;
create or replace function public.track_event(
    p_app_id text,
    p_type text,
    p_meta jsonb default '{}',
    p_dedup_key text default null
)
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_uid uuid := paycore.resolve_user_id(null);
begin
    if p_type is null or btrim(p_type) = '' or length(p_type) > 100 then
        raise exception 'p_type must be 1 to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_app_id is not null and (btrim(p_app_id) = '' or length(p_app_id) > 100) then
        raise exception 'p_app_id must be null or 1 to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_meta is not null and jsonb_typeof(p_meta) <> 'object' then
        raise exception 'p_meta must be a JSON object'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if pg_catalog.octet_length(p_meta::text) > 8192 then
        raise exception 'p_meta must be at most 8 kB'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_dedup_key is not null and (p_dedup_key = '' or length(p_dedup_key) > 200) then
        raise exception 'p_dedup_key must be null or 1 to 200 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return paycore.log_event(
        p_type => p_type,
        p_actor_id => v_uid,
        p_app_id => p_app_id,
        p_meta => coalesce(p_meta, '{}'),
        p_dedup_key => 'track:' || v_uid || ':' || p_dedup_key
    );
end;
$$;
comment on function public.track_event(text, text, jsonb, text) is
'Records an event by the signed-in caller (actor = auth.uid()). A repeated p_dedup_key '
'returns the id of the first event and writes nothing. SECURITY DEFINER: clients cannot '
'insert into public.events themselves.';

drop function paycore.take_client_event_slot(uuid);
comment on column public.events.dedup_key is
'Idempotency key: a second event with the same key is not written. '
'Keys from track_event are stored as track:<user id>:<client key>.';
alter table public.events drop column source;

create or replace function paycore.resolve_user_id(p_user_id uuid)
returns uuid
language plpgsql stable
as $$
declare
    v_role text := paycore.caller_role();
    v_uid uuid;
begin
    if v_role = 'anon' then
        raise exception 'sign in first'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if v_role = 'authenticated' then
        v_uid := auth.uid();
        if v_uid is null then
            raise exception 'no user in the request''s JWT'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        if p_user_id is not null and p_user_id <> v_uid then
            raise exception 'a user may act only on itself'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        return v_uid;
    end if;
    -- service_role, or a trusted login role (the webhook, a DBA, a job).
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return p_user_id;
end;
$$;
comment on function paycore.resolve_user_id(uuid) is
'The user a call acts on: the caller itself for authenticated (null or its own id, else PT403), '
'any given id for service_role and trusted roles (null is PT400), never anything for anon.';

drop function paycore.caller_is_trusted();
drop function paycore.tg__leave_only_with_user();
drop function paycore.check_idempotency_key(text, text);
drop function paycore.check_json_object(text, jsonb, integer);
drop function paycore.check_text(text, text, integer, boolean);
drop function paycore.is_blank(text);
drop function paycore.setting(text);
drop table paycore.settings;
