-- depends: 0003.create-credits
-- harden-foundation: the security review's fixes to base, core and credits (schema/, functions/
-- and policies/ carry the same; the drift test holds both to one catalog).
--   - every SECURITY DEFINER function: search_path = pg_catalog, pg_temp (no pg_temp shadowing)
--   - trusted roles: service_role, members of paycore_webhook, the owner; a JWT of a deleted user is PT403
--   - keys paycore writes itself live under paycore:, which no caller may use
--   - amounts and balances cannot overflow (PT400 / PT409 balance_limit_exceeded)
--   - ledger rows and balances leave only with their auth user
--   - events say who wrote them (source); clients cannot use paycore's namespaces; PT429 per hour
--   - the generations bucket: no listing for anon, a user lists only its own folder
--   - input sizes capped, white space is blank

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- base ---------------------------------------------------------------------------------------
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

create or replace function paycore.setting(p_key text)
returns jsonb
language sql stable
as $$
    select s.value from paycore.settings as s where s.key = p_key
$$;
comment on function paycore.setting(text) is
'The configured value of p_key in paycore.settings, null when absent. Internal.';

create or replace function paycore.is_blank(p_value text)
returns boolean
language sql immutable
as $$
    -- Unicode white space too (next line, no-break, ideographic spaces), and the characters
    -- that show nothing (soft hyphen, zero-width and filler characters), not only ' '.
    select p_value ~ (
        '^[[:space:]\u0085\u00a0\u00ad\u115f\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f'
        || '\u205f-\u2064\u2800\u3000\u3164\ufeff\uffa0]*$'
    )
$$;
comment on function paycore.is_blank(text) is
'True when p_value is empty or only white space (Unicode spaces included); null for null. Internal.';

create or replace function paycore.check_text(p_name text, p_value text, p_max_length integer, p_required boolean)
returns void
language plpgsql immutable
as $$
begin
    if p_value is null then
        if p_required then
            raise exception '% is required', p_name
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
        return;
    end if;
    if paycore.is_blank(p_value) or length(p_value) > p_max_length then
        raise exception '% must be 1 to % characters, not only white space', p_name, p_max_length
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_text(text, text, integer, boolean) is
'Raises PT400 invalid_argument unless p_value is null (when not required) or 1 to p_max_length '
'characters that are not all white space. Internal: the one rule for every text argument.';

create or replace function paycore.check_json_object(p_name text, p_value jsonb, p_max_bytes integer)
returns void
language plpgsql immutable
as $$
begin
    if p_value is null or jsonb_typeof(p_value) <> 'object' then
        raise exception '% must be a JSON object', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if octet_length(p_value::text) > p_max_bytes then
        raise exception '% must be at most % bytes of JSON', p_name, p_max_bytes
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_json_object(text, jsonb, integer) is
'Raises PT400 invalid_argument unless p_value is a JSON object of at most p_max_bytes bytes '
'as text. Internal.';

create or replace function paycore.check_idempotency_key(p_name text, p_key text)
returns void
language plpgsql immutable
as $$
begin
    if p_key is null then
        return;
    end if;
    if paycore.is_blank(p_key) or length(p_key) > 200 then
        raise exception '% must be null or 1 to 200 characters, not only white space', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_key like 'paycore:%' then
        raise exception '% must not start with paycore: (reserved for the keys paycore writes)', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_idempotency_key(text, text) is
'Raises PT400 invalid_argument unless a caller''s key is null or 1 to 200 characters outside '
'the reserved prefix paycore: (the namespace of the keys paycore writes itself). Internal.';

create or replace function paycore.caller_is_trusted()
returns boolean
language sql stable
as $$
    -- Trusted: service_role (the Supabase secret key), members of paycore_webhook (the
    -- webhook's login), and the owner of paycore's functions (current_user inside them)
    -- with its members (a DBA, a job). Not a role that merely inherits from authenticated
    -- or service_role. Without arguments, so that it is inlined into its callers.
    select paycore.caller_role() = 'service_role'
        or pg_catalog.pg_has_role(paycore.caller_role(), 'paycore_webhook', 'MEMBER')
        or pg_catalog.pg_has_role(paycore.caller_role(), current_user, 'MEMBER')
$$;
comment on function paycore.caller_is_trusted() is
'Whether the caller''s role may act on any user: service_role, members of paycore_webhook, and '
'the owner of paycore''s functions with its members. Internal.';

create or replace function paycore.resolve_user_id(p_user_id uuid)
returns uuid
language plpgsql stable
as $$
declare
    v_role text := paycore.caller_role();
    v_uid uuid;
begin
    if v_role = 'authenticated' then
        begin
            v_uid := auth.uid();
        exception when data_exception or program_limit_exceeded then
            raise exception 'the request''s JWT claims carry no valid user id'
            using errcode = 'PT403', hint = 'forbidden';
        end;
        if v_uid is null then
            raise exception 'no user in the request''s JWT'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        if p_user_id is not null and p_user_id <> v_uid then
            raise exception 'a user may act only on itself'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        -- A JWT outlives the user it was issued to (deleted, or soft-deleted by Supabase Auth).
        if not exists (
            select 1 from auth.users as u where u.id = v_uid and u.deleted_at is null
        ) then
            raise exception 'the user of this JWT no longer exists'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        return v_uid;
    end if;
    if v_role = 'anon' or not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', v_role
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return p_user_id;
end;
$$;
comment on function paycore.resolve_user_id(uuid) is
'The user a call acts on: for authenticated the caller itself (null or its own id, else PT403; '
'PT403 when the JWT''s user no longer exists); any given id for trusted roles '
'(paycore.caller_is_trusted; null is PT400); every other role, anon included, PT403.';

create or replace function paycore.tg__leave_only_with_user()
returns trigger
language plpgsql
as $$
begin
    -- The one way out: a delete cascaded from deleting the auth user (GDPR erasure), seen
    -- as a row whose user no longer exists.
    if tg_op = 'DELETE' then
        if not exists (select 1 from auth.users as u where u.id = old.user_id) then
            return old;
        end if;
    end if;
    raise exception '% on %.% refused: its rows stay until their auth user is deleted',
        tg_op, tg_table_schema, tg_table_name
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg__leave_only_with_user() is
'Refuses the operation it fires on (UPDATE, DELETE, TRUNCATE of a table with user_id), except '
'the delete cascaded from deleting the row''s auth user: the ledger and the balances keep '
'their rows as long as the user exists.';

create trigger settings_set_updated_at
before update on paycore.settings
for each row execute function paycore.tg__set_updated_at();

revoke all on function paycore.caller_is_trusted() from public;
revoke all on function paycore.tg__leave_only_with_user() from public;
revoke all on function paycore.setting(text) from public;
revoke all on function paycore.is_blank(text) from public;
revoke all on function paycore.check_text(text, text, integer, boolean) from public;
revoke all on function paycore.check_json_object(text, jsonb, integer) from public;
revoke all on function paycore.check_idempotency_key(text, text) from public;

revoke all on table paycore.settings from public;

-- core ---------------------------------------------------------------------------------------

-- Existing rows: track_event never set a subject, paycore's own generation events always did.
alter table public.events add column source text not null default 'paycore';
update public.events set source = 'client'
where subject_type is null and split_part(type, '.', 1) <> 'generation';
alter table public.events
add constraint source_is_known check (source in ('paycore', 'client')) not valid; -- validated by 0005
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


create or replace function paycore.take_client_event_slot(p_user_id uuid)
returns void
language plpgsql volatile
as $$
declare
    v_limit integer := coalesce((paycore.setting('track_event_hourly_limit'))::integer, 600);
    v_hour timestamptz := date_trunc('hour', paycore.clock(), 'UTC');
    v_events integer;
begin
    -- One statement counts and checks: the row lock serialises a user's parallel calls, and
    -- a full hour matches no row, so the limit holds under any concurrency.
    insert into paycore.client_event_counters as c (user_id, window_start, events)
    values (p_user_id, v_hour, 1)
    on conflict (user_id) do update
    set
        window_start = excluded.window_start,
        events = case when c.window_start = excluded.window_start then c.events + 1 else 1 end
    where c.window_start <> excluded.window_start or c.events < v_limit
    returning c.events into v_events;
    if v_events is null then
        raise exception 'at most % events per hour may be tracked', v_limit
        using errcode = 'PT429', hint = 'rate_limited',
        detail = json_build_object('limit', v_limit, 'retry_after', v_hour + interval '1 hour')::text;
    end if;
end;
$$;
comment on function paycore.take_client_event_slot(uuid) is
'Counts one client event of p_user_id in the current clock hour; PT429 rate_limited (counting '
'nothing) when the hour already has track_event_hourly_limit events. Internal.';

create or replace function public.track_event(
    p_app_id text,
    p_type text,
    p_meta jsonb default '{}',
    p_dedup_key text default null
)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(null);
    v_key text;
    v_id uuid;
begin
    perform paycore.check_text('p_type', p_type, 100, true);
    perform paycore.check_text('p_app_id', p_app_id, 100, false);
    perform paycore.check_json_object('p_meta', coalesce(p_meta, '{}'), 8192);
    perform paycore.check_text('p_dedup_key', p_dedup_key, 200, false);
    -- Types are identifiers: ASCII letters, digits and _ . : / - and spaces, so no look-alike
    -- (fullwidth, Cyrillic, zero-width) of a paycore type can pass for one.
    if p_type !~ '^[A-Za-z0-9_][A-Za-z0-9_.:/ -]*$' then
        raise exception 'p_type must be ASCII letters, digits and _ . : / - or spaces, starting with a letter, digit or _'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if exists (
        select 1 from paycore.reserved_event_namespaces as r
        -- The first word of the type, whatever precedes or follows it: '.', ':', '-', white space.
        where r.namespace = substring(lower(p_type) from '^[^a-z0-9_]*([a-z0-9_]*)')
    ) then
        raise exception 'event type % is in a namespace only paycore writes', p_type
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    v_key := 'track:' || v_uid || ':' || p_dedup_key;
    if v_key is not null then
        select e.id into v_id from public.events as e where e.dedup_key = v_key;
        if found then
            return v_id;
        end if;
    end if;

    perform paycore.take_client_event_slot(v_uid);
    insert into public.events (type, actor_id, app_id, meta, dedup_key, source)
    values (p_type, v_uid, p_app_id, coalesce(p_meta, '{}'), v_key, 'client')
    on conflict (dedup_key) do nothing
    returning id into v_id;
    if v_id is null then
        -- The same key, tracked concurrently and committed first.
        select e.id into v_id from public.events as e where e.dedup_key = v_key;
    end if;
    return v_id;
end;
$$;
comment on function public.track_event(text, text, jsonb, text) is
'Records an event by the signed-in caller (actor = auth.uid(), source = client). A repeated '
'p_dedup_key returns the id of the first event and writes nothing. Types in paycore''s own '
'namespaces (paycore.reserved_event_namespaces) are PT400; beyond track_event_hourly_limit '
'events per hour PT429 rate_limited. SECURITY DEFINER: clients cannot insert into '
'public.events themselves.';

create trigger client_event_counters_set_updated_at
before update on paycore.client_event_counters
for each row execute function paycore.tg__set_updated_at();

revoke all on function paycore.take_client_event_slot(uuid) from public;
revoke all on table paycore.reserved_event_namespaces from public;
revoke all on table paycore.client_event_counters from public;

-- credits ------------------------------------------------------------------------------------

alter table public.credits
add constraint balance_is_at_most_10e18 check (balance <= 1000000000000000000) not valid; -- validated by 0005
comment on table public.credit_transactions is
'The credit ledger, append-only: rows are never updated or deleted, except with their auth user. '
'A (user_id, idempotency_key) pair is applied at most once.';
comment on column public.credit_transactions.idempotency_key is
'Caller''s key (adjust_credits), or a key paycore writes itself, in the reserved namespace '
'paycore: (paycore:generation:<id>:debit / :refund) that no caller can use.';

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

create or replace function public.get_user_balance(p_user_id uuid default null)
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

create or replace function public.complete_generation(
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

create or replace function public.fail_generation(p_generation_id uuid, p_reason text)
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

-- The ledger's triggers and the new balance triggers share paycore.tg__leave_only_with_user.
create or replace trigger credit_transactions_append_only
before update or delete on public.credit_transactions
for each row execute function paycore.tg__leave_only_with_user();
create or replace trigger credit_transactions_no_truncate
before truncate on public.credit_transactions
for each statement execute function paycore.tg__leave_only_with_user();
-- Internal trigger function, no caller but the two triggers just moved off it.
-- squawk-ignore ban-drop-function
drop function paycore.tg_credit_transactions__append_only();
create trigger credits_delete_with_user
before delete on public.credits
for each row execute function paycore.tg__leave_only_with_user();
create trigger credits_no_truncate
before truncate on public.credits
for each statement execute function paycore.tg__leave_only_with_user();

drop policy generations_bucket_select on storage.objects;
-- Storage bucket 'generations': public, so anyone downloads a file by its URL without a
-- policy; a signed-in user lists, writes and deletes only under its own folder
-- <auth.uid()>/... No SELECT policy for anon: listing would expose every user's files.
create policy generations_bucket_select_own on storage.objects
for select to authenticated
using (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
);

