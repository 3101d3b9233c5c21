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
    <<apply>>
    loop
        -- The check and the write in one statement: the row lock serialises writers of one
        -- user, and a debit beyond the balance (or a grant beyond the cap) matches no row.
        -- |p_amount| <= 10^15 and balance <= 10^18, so the sum cannot overflow.
        update public.credits as c
        set balance = c.balance + p_amount
        where c.user_id = p_user_id and c.balance + p_amount between 0 and 1000000000000000000
        returning c.balance into o_balance;
        exit apply when found;

        -- No row matched: the change is refused, or the row did not exist in the update's
        -- snapshot. Locked and read again, the row tells which.
        select c.balance into v_balance from public.credits as c where c.user_id = p_user_id for update;
        if found then
            continue apply when v_balance + p_amount between 0 and 1000000000000000000;
            if p_amount < 0 then
                raise exception 'not enough credits: balance %, needed %', v_balance, -p_amount
                using errcode = 'PT402', hint = 'insufficient_credits',
                detail = json_build_object('balance', v_balance, 'needed', -p_amount)::text;
            end if;
            raise exception 'a balance cannot exceed 10^18 credits: balance %, grant %', v_balance, p_amount
            using errcode = 'PT409', hint = 'balance_limit_exceeded',
            detail = json_build_object('balance', v_balance, 'amount', p_amount)::text;
        end if;
        if not exists (select 1 from auth.users as u where u.id = p_user_id) then
            raise exception 'user % does not exist', p_user_id
            using errcode = 'PT404', hint = 'not_found';
        end if;
        if p_amount < 0 then
            raise exception 'not enough credits: balance 0, needed %', -p_amount
            using errcode = 'PT402', hint = 'insufficient_credits',
            detail = json_build_object('balance', 0, 'needed', -p_amount)::text;
        end if;
        -- The user's first credit. A concurrent first credit wins the insert: then update.
        insert into public.credits (user_id, balance)
        values (p_user_id, p_amount)
        on conflict (user_id) do nothing
        returning balance into o_balance;
        exit apply when found;
    end loop;

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
'PT402 for a debit beyond the balance, PT409 balance_limit_exceeded for a balance beyond '
'10^18; a refusal writes nothing. Internal: callers check |p_amount| <= 10^15.';

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
set search_path = pg_catalog, pg_temp
as $$
declare
    v_previous public.credit_transactions;
    v_change record;
begin
    -- The checks are plain expressions, not calls of paycore.check_*: this is the hot path.
    -- EXECUTE is service_role's; a role that merely inherits it is not trusted (PT403).
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_amount is null or p_amount = 0 or p_amount < -1000000000000000 or p_amount > 1000000000000000 then
        raise exception 'p_amount must be a non-zero integer from -10^15 to 10^15'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_type is null or length(p_type) > 50 or paycore.is_blank(p_type) then
        raise exception 'p_type must be 1 to 50 characters, not only white space'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_description is not null and (length(p_description) > 1000 or paycore.is_blank(p_description)) then
        raise exception 'p_description must be null or 1 to 1000 characters, not only white space'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' or octet_length(p_metadata::text) > 8192 then
        raise exception 'p_metadata must be a JSON object of at most 8192 bytes'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    if p_idempotency_key is not null then
        perform paycore.check_idempotency_key('p_idempotency_key', p_idempotency_key);
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
'A debit beyond the balance is PT402 and writes nothing; a balance beyond 10^18 is PT409 '
'balance_limit_exceeded. The same idempotency key with the same arguments returns the first '
'result; with other arguments PT409. Keys starting with paycore: are reserved (PT400). '
'service_role only; SECURITY DEFINER because no client role may write credits or the ledger.';

create function public.get_user_balance(p_user_id uuid default null)
returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
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
set search_path = pg_catalog, pg_temp
as $$
declare
    v_generation public.generations;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_type', p_type, 100, true);
    perform paycore.check_text('p_model', p_model, 100, true);
    perform paycore.check_text('p_prompt', p_prompt, 20000, false);
    if p_cost is null or p_cost < 0 or p_cost > 1000000000000000 then
        raise exception 'p_cost must be an integer from 0 to 10^15'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_json_object('p_metadata', p_metadata, 8192);
    perform paycore.check_idempotency_key('p_idempotency_key', p_idempotency_key);
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
            'paycore:generation:' || v_generation.id || ':debit'
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
set search_path = pg_catalog, pg_temp
as $$
declare
    v_generation public.generations;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_generation_id is null then
        raise exception 'p_generation_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_result_urls is null or jsonb_typeof(p_result_urls) <> 'array'
        or jsonb_array_length(p_result_urls) > 100 or octet_length(p_result_urls::text) > 65536
        or exists (
            select 1 from jsonb_array_elements(p_result_urls) as r (url)
            where jsonb_typeof(r.url) <> 'string' or length(r.url #>> '{}') > 2048
                or paycore.is_blank(r.url #>> '{}')
        ) then
        raise exception 'p_result_urls must be a JSON array of at most 100 strings of 1 to 2048 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_preview_path', p_preview_path, 1024, false);
    perform paycore.check_text('p_poster_path', p_poster_path, 1024, false);

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
set search_path = pg_catalog, pg_temp
as $$
declare
    v_generation public.generations;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_generation_id is null then
        raise exception 'p_generation_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_reason', p_reason, 2000, true);

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
            v_generation.id, 'paycore:generation:' || v_generation.id || ':refund'
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

-- A balance row goes only with its auth user: deleting it alone would erase the ledger.
create trigger credits_delete_with_user
before delete on public.credits
for each row execute function paycore.tg__leave_only_with_user();
create trigger credits_no_truncate
before truncate on public.credits
for each statement execute function paycore.tg__leave_only_with_user();

-- The ledger is append-only.
create trigger credit_transactions_append_only
before update or delete on public.credit_transactions
for each row execute function paycore.tg__leave_only_with_user();
create trigger credit_transactions_no_truncate
before truncate on public.credit_transactions
for each statement execute function paycore.tg__leave_only_with_user();

create trigger credits_set_updated_at
before update on public.credits
for each row execute function paycore.tg__set_updated_at();
create trigger generations_set_updated_at
before update on public.generations
for each row execute function paycore.tg__set_updated_at();
create trigger credit_packages_set_updated_at
before update on public.credit_packages
for each row execute function paycore.tg__set_updated_at();
