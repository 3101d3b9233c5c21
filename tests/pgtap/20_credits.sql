-- credits and generations: tables, adjust_credits, get_user_balance, the generation
-- lifecycle, credit packages, the storage bucket, and who may do what.
begin;
select plan(144);

-- Tables and their guarantees.
select has_table('public', 'credits', 'public.credits exists');
select col_is_pk('public', 'credits', 'user_id', 'credits is one row per user');
select fk_ok('public', 'credits', 'user_id', 'auth', 'users', 'id');
select has_table('public', 'credit_transactions', 'public.credit_transactions exists');
select columns_are('public', 'credit_transactions', array[
    'id', 'user_id', 'amount', 'balance_after', 'type', 'description', 'metadata',
    'generation_id', 'idempotency_key', 'created_at'
]);
select col_is_unique('public', 'credit_transactions', array['user_id', 'idempotency_key'],
    'a ledger idempotency key is unique per user');
select has_table('public', 'generations', 'public.generations exists');
select columns_are('public', 'generations', array[
    'id', 'user_id', 'type', 'model', 'prompt', 'status', 'result_urls', 'credits_used',
    'preview_path', 'poster_path', 'preview_status', 'failure_reason', 'metadata',
    'idempotency_key', 'created_at', 'updated_at', 'completed_at'
]);
select has_table('public', 'credit_packages', 'public.credit_packages exists');
select results_eq(
    'select id, credits, price_amount, currency from public.credit_packages where active order by sort_order',
    $$values ('pkg_100_credits', 100::bigint, 1000::bigint, 'usd'), ('pkg_500_credits', 500, 4500, 'usd'),
             ('pkg_2000_credits', 2000, 16000, 'usd')$$,
    'default credit packages'
);

select tests.create_user('credits-a@example.test') as a \gset
select tests.create_user('credits-b@example.test') as b \gset
select tests.create_user('credits-c@example.test') as c \gset

-- adjust_credits: grants, debits, the ledger.
select tests.authenticate_as_service_role();
select results_eq(
    format($$select balance from adjust_credits(%L, 100, 'purchase', 'Bought 100', '{"order": 1}')$$, :'a'),
    array[100::bigint], 'the first grant creates the balance row'
);
select results_eq(
    format($$select balance from adjust_credits(%L, -30, 'spend')$$, :'a'),
    array[70::bigint], 'a debit lowers the balance'
);
select results_eq(
    format($$select amount, balance_after, type, description, metadata from credit_transactions
             where user_id = %L order by created_at, balance_after desc$$, :'a'),
    $$values (100::bigint, 100::bigint, 'purchase', 'Bought 100', '{"order": 1}'::jsonb),
             (-30, 70, 'spend', null, '{}')$$,
    'each change is a ledger row with the balance after it'
);
select tests.throws_hint(format($$select adjust_credits(%L, -71, 'spend')$$, :'a'), 'PT402',
    'insufficient_credits', 'a debit beyond the balance is PT402');
select tests.throws_hint(format($$select adjust_credits(%L, -1, 'spend')$$, :'c'), 'PT402',
    'insufficient_credits', 'a debit of a user without a balance row is PT402');
select tests.throws_hint(format($$select adjust_credits(%L, 5, 'gift')$$, gen_random_uuid()), 'PT404',
    'not_found', 'an unknown user is PT404');
select results_eq(
    format($$select balance from adjust_credits(%L, -70, 'spend')$$, :'a'),
    array[0::bigint], 'a debit down to exactly zero is allowed'
);

-- Idempotency.
select balance as k_balance, transaction_id as k_tx
from adjust_credits(:'b', 50, 'purchase', 'cs_1', '{"session": "cs_1"}', 'checkout:cs_1') \gset
select results_eq(
    format($$select balance, transaction_id from adjust_credits(%L, 50, 'purchase', 'cs_1',
             '{"session": "cs_1"}', 'checkout:cs_1')$$, :'b'),
    format($$values (%s::bigint, %L::uuid)$$, :k_balance, :'k_tx'),
    'the same key and arguments return the first result'
);
select is((select balance from credits where user_id = :'b'), 50::bigint, '... and change nothing');
select tests.throws_hint(
    format($$select adjust_credits(%L, 60, 'purchase', 'cs_1', '{"session": "cs_1"}', 'checkout:cs_1')$$, :'b'),
    'PT409', 'idempotency_conflict', 'the same key with another amount is PT409');
select tests.throws_hint(
    format($$select adjust_credits(%L, 50, 'purchase', 'cs_1', '{"session": "other"}', 'checkout:cs_1')$$, :'b'),
    'PT409', 'idempotency_conflict', 'the same key with other metadata is PT409');
select results_eq(
    format($$select balance from adjust_credits(%L, 50, 'purchase', 'cs_1', '{"session": "cs_1"}',
             'checkout:cs_1')$$, :'c'),
    array[50::bigint], 'keys are per user: another user''s key is independent'
);
select is((select count(*)::int from credit_transactions where user_id = :'b'), 1,
    'one ledger row for b after retries and conflicts');

-- Bad input: PT400.
select tests.throws_hint($$select adjust_credits(null, 5, 'gift')$$, 'PT400', 'invalid_argument',
    'a null user is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 0, 'gift')$$, :'a'), 'PT400',
    'invalid_argument', 'amount 0 is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, null, 'gift')$$, :'a'), 'PT400',
    'invalid_argument', 'a null amount is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 10000000000000000, 'gift')$$, :'a'), 'PT400',
    'invalid_argument', 'an amount over 10^15 is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 5, ' ')$$, :'a'), 'PT400',
    'invalid_argument', 'a blank type is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 5, 'gift', null, '[]')$$, :'a'), 'PT400',
    'invalid_argument', 'metadata that is not an object is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 5, 'gift', null, null)$$, :'a'), 'PT400',
    'invalid_argument', 'null metadata is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 5, 'gift', null, '{}', '')$$, :'a'), 'PT400',
    'invalid_argument', 'an empty idempotency key is PT400');
select results_eq(
    format($$select count(*)::int, sum(amount)::bigint from credit_transactions where user_id = %L$$, :'a'),
    $$values (3, 0::bigint)$$,
    'refused calls wrote no ledger row'
);
select is((select balance from credits where user_id = :'a'), 0::bigint, '... and left the balance alone');

-- Ledger rows are append-only.
select tests.reset_role();
select tests.throws_hint(format($$update credit_transactions set amount = 1000 where user_id = %L$$, :'a'),
    'PT403', 'forbidden', 'ledger rows cannot be updated, even by the owner');
select tests.throws_hint(format($$delete from credit_transactions where user_id = %L$$, :'a'),
    'PT403', 'forbidden', 'ledger rows cannot be deleted');
select tests.throws_hint('truncate credit_transactions cascade', 'PT403', 'forbidden',
    'the ledger cannot be truncated');
select tests.throws_hint(format($$update credits set balance = -1 where user_id = %L$$, :'a'),
    '23514', null, 'a negative balance violates balance_is_not_negative');

-- get_user_balance.
select tests.authenticate_as(:'b');
select is(get_user_balance(), 50::bigint, 'authenticated: null means the caller');
select is(get_user_balance(:'b'), 50::bigint, 'authenticated: its own id');
select tests.throws_hint(format('select get_user_balance(%L)', :'c'), 'PT403', 'forbidden',
    'authenticated: another user''s balance is PT403');
select tests.authenticate_as(tests.create_user('credits-new@example.test'));
select is(get_user_balance(), 0::bigint, 'a user who never had credits has 0');
select tests.authenticate_as_service_role();
select is(get_user_balance(:'c'), 50::bigint, 'service_role reads any balance');
select tests.throws_hint('select get_user_balance()', 'PT400', 'invalid_argument',
    'service_role must name the user');
select tests.throws_hint(format('select get_user_balance(%L)', gen_random_uuid()), 'PT404', 'not_found',
    'an unknown user is PT404');
select tests.clear_authentication();
select tests.throws_hint('select get_user_balance()', '42501', null, 'anon cannot read balances');

-- Generations: start debits and creates, in one transaction.
select tests.authenticate_as_service_role();
select from adjust_credits(:'a', 100, 'purchase');
select id as g1 from start_generation(:'a', 'image', 'flux', 'a dragon', 30, '{"w": 1024}', 'gen-key-1') \gset
select results_eq(
    format($$select status, credits_used, user_id, completed_at is null from generations where id = %L$$, :'g1'),
    format($$values ('processing', 30::bigint, %L::uuid, true)$$, :'a'),
    'start_generation creates a processing generation with its cost'
);
select is(get_user_balance(:'a'), 70::bigint, '... and debits the cost');
select results_eq(
    format($$select amount, type, generation_id from credit_transactions where generation_id = %L$$, :'g1'),
    format($$values (-30::bigint, 'generation', %L::uuid)$$, :'g1'),
    '... as a ledger row that carries the generation id'
);
select is(
    (select count(*)::int from events where subject_id = :'g1' and type = 'generation.started'), 1,
    '... and logs generation.started'
);
select is(
    (select id from start_generation(:'a', 'image', 'flux', 'a dragon', 30, '{"w": 1024}', 'gen-key-1')),
    :'g1'::uuid, 'a retried start with the same key returns the same generation'
);
select is(get_user_balance(:'a'), 70::bigint, '... and debits nothing more');
select tests.throws_hint(
    format($$select start_generation(%L, 'image', 'flux', 'a cat', 30, '{}', 'gen-key-1')$$, :'a'),
    'PT409', 'idempotency_conflict', 'the same key with another prompt is PT409');
select tests.throws_hint(
    format($$select start_generation(%L, 'video', 'veo', 'a dragon', 71)$$, :'a'),
    'PT402', 'insufficient_credits', 'a start beyond the balance is PT402');
select results_eq(
    format($$select (select count(*)::int from generations where user_id = %1$L),
                    (select balance from credits where user_id = %1$L)$$, :'a'),
    $$values (1, 70::bigint)$$,
    '... and creates nothing'
);
select tests.throws_hint(format($$select start_generation(%L, 'image', 'flux', 'p', -1)$$, :'a'),
    'PT400', 'invalid_argument', 'a negative cost is PT400');
select tests.throws_hint(format($$select start_generation(%L, 'image', '', 'p', 1)$$, :'a'),
    'PT400', 'invalid_argument', 'a blank model is PT400');
select tests.throws_hint(format($$select start_generation(%L, 'image', 'flux', 'p', 1, '"x"')$$, :'a'),
    'PT400', 'invalid_argument', 'metadata that is not an object is PT400');
select tests.throws_hint($$select start_generation(null, 'image', 'flux', 'p', 1)$$,
    'PT400', 'invalid_argument', 'a null user is PT400');
select tests.throws_hint(format($$select start_generation(%L, 'image', 'flux', 'p', 1)$$, gen_random_uuid()),
    'PT404', 'not_found', 'an unknown user is PT404');
select id as g0 from start_generation(:'a', 'image', 'free-model', 'p', 0) \gset
select is((select count(*)::int from credit_transactions where generation_id = :'g0'), 0,
    'a free generation writes no ledger row');

-- complete_generation.
select tests.travel_to('2031-05-01 12:00:00+00');
select results_eq(
    format($$select status, result_urls, preview_path, preview_status, completed_at
             from complete_generation(%L, '["https://cdn.example/1.png"]', 'a/p.png')$$, :'g1'),
    $$values ('success', '["https://cdn.example/1.png"]'::jsonb, 'a/p.png', 'ready',
              '2031-05-01 12:00:00+00'::timestamptz)$$,
    'complete_generation records the results and the time of paycore.clock()'
);
select is(
    (select count(*)::int from events where subject_id = :'g1' and type = 'generation.completed'), 1,
    '... and logs generation.completed'
);
select tests.throws_hint(format($$select complete_generation(%L, '[]')$$, :'g1'), 'PT409', 'invalid_state',
    'completing a successful generation again is PT409');
select tests.throws_hint(format($$select fail_generation(%L, 'late')$$, :'g1'), 'PT409', 'invalid_state',
    'failing a successful generation is PT409');
select is(get_user_balance(:'a'), 70::bigint, '... and refunds nothing');
select tests.throws_hint(format($$select complete_generation(%L, '[]')$$, gen_random_uuid()), 'PT404',
    'not_found', 'completing an unknown generation is PT404');
select tests.throws_hint(format($$select complete_generation(%L, '{}')$$, :'g0'), 'PT400',
    'invalid_argument', 'result urls that are not an array are PT400');
select tests.throws_hint('select complete_generation(null, ''[]'')', 'PT400', 'invalid_argument',
    'a null generation id is PT400');

-- fail_generation refunds exactly once.
select id as g2 from start_generation(:'a', 'video', 'veo', 'waves', 50) \gset
select is(get_user_balance(:'a'), 20::bigint, 'a second generation debits 50');
select results_eq(
    format($$select status, failure_reason, completed_at from fail_generation(%L, 'provider timeout')$$, :'g2'),
    $$values ('failed', 'provider timeout', '2031-05-01 12:00:00+00'::timestamptz)$$,
    'fail_generation marks the generation failed with its reason'
);
select is(get_user_balance(:'a'), 70::bigint, '... and refunds its cost');
select results_eq(
    format($$select amount, type from credit_transactions where generation_id = %L order by amount$$, :'g2'),
    $$values (-50::bigint, 'generation'), (50, 'refund')$$,
    '... as a ledger row that carries the generation id'
);
select tests.throws_hint(format($$select fail_generation(%L, 'again')$$, :'g2'), 'PT409', 'invalid_state',
    'failing a failed generation again is PT409');
select tests.throws_hint(format($$select complete_generation(%L, '[]')$$, :'g2'), 'PT409', 'invalid_state',
    'completing a failed generation is PT409');
select is(get_user_balance(:'a'), 70::bigint, '... and refunds nothing more');
select tests.throws_hint(format($$select fail_generation(%L, ' ')$$, :'g0'), 'PT400', 'invalid_argument',
    'a blank reason is PT400');
select tests.throws_hint(format($$select fail_generation(%L, 'x')$$, gen_random_uuid()), 'PT404',
    'not_found', 'failing an unknown generation is PT404');
select is(
    (select count(*)::int from events where subject_id = :'g2' and type = 'generation.failed'), 1,
    'fail_generation logs generation.failed'
);
select tests.travel_to(null);

-- The invariant holds for everyone touched above.
select tests.reset_role();
select is_empty(
    $$select c.user_id from credits as c
      left join (select user_id, sum(amount) as total from credit_transactions group by user_id) as t
      using (user_id)
      where c.balance is distinct from coalesce(t.total, 0)$$,
    'every balance equals the sum of its ledger'
);

-- Who may call what.
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select adjust_credits(%L, 1000, 'gift')$$, :'a'), '42501', null,
    'authenticated cannot adjust credits, not even its own');
select tests.throws_hint(format($$select start_generation(%L, 'image', 'flux', 'p', 1)$$, :'a'), '42501', null,
    'authenticated cannot start generations');
select tests.throws_hint(format($$select fail_generation(%L, 'refund me')$$, :'g0'), '42501', null,
    'authenticated cannot fail generations (that would refund)');
select tests.throws_hint(format($$select complete_generation(%L, '[]')$$, :'g0'), '42501', null,
    'authenticated cannot complete generations');
select tests.throws_hint(format($$insert into credits (user_id, balance) values (%L, 1000)$$, :'a'), '42501',
    null, 'authenticated cannot write credits directly');
select tests.throws_hint(format($$update generations set status = 'failed' where id = %L$$, :'g0'), '42501',
    null, 'authenticated cannot write generations directly');

-- RLS: a user reads its own rows only.
select results_eq('select user_id from credits', format('values (%L::uuid)', :'a'),
    'a user reads only its own balance');
select is((select count(*)::int from credit_transactions where user_id <> :'a'), 0,
    'a user reads only its own ledger rows');
select is((select count(*)::int from credit_transactions), 7, '... all seven of them');
select results_eq('select id from generations order by created_at, id',
    format('select id from generations where user_id = %L order by created_at, id', :'a'),
    'a user reads only its own generations');
select tests.authenticate_as(:'b');
select is_empty('select * from generations', 'another user sees none of them');

select tests.authenticate_as_service_role();
select tests.throws_hint(format($$update credits set balance = 0 where user_id = %L$$, :'a'), '42501', null,
    'service_role cannot write credits directly either: every write is a function');

-- Credit packages: the active ones are public.
select tests.reset_role();
insert into credit_packages (id, name, credits, price_amount) values ('retired', 'Old', 10, 100);
update credit_packages set active = false where id = 'retired';
select tests.clear_authentication();
select results_eq('select id from credit_packages order by sort_order, id',
    $$values ('pkg_100_credits'), ('pkg_500_credits'), ('pkg_2000_credits')$$,
    'anon reads the active packages only');
select tests.throws_hint($$update credit_packages set credits = 1$$, '42501', null, 'anon cannot change packages');
select tests.reset_role();
select tests.throws_hint($$insert into credit_packages (id, name, credits, price_amount) values ('x', 'X', 0, 1)$$,
    '23514', null, 'a package grants a positive number of credits');
select tests.throws_hint(
    $$insert into credit_packages (id, name, credits, price_amount, currency) values ('x', 'X', 1, 1, 'USD')$$,
    '23514', null, 'currency is a lowercase ISO code');

-- Storage bucket 'generations'.
select results_eq(
    $$select public, file_size_limit, 'image/png' = any(allowed_mime_types), 'video/mp4' = any(allowed_mime_types),
             'application/pdf' = any(allowed_mime_types)
      from storage.buckets where id = 'generations'$$,
    $$values (true, 52428800::bigint, true, true, false)$$,
    'bucket generations: public, 50 MB, images and videos only'
);
select tests.authenticate_as(:'a');
select lives_ok(
    format($$insert into storage.objects (bucket_id, name) values ('generations', '%s/image/g1.png')$$, :'a'),
    'a user uploads under its own folder'
);
select tests.throws_hint(
    format($$insert into storage.objects (bucket_id, name) values ('generations', '%s/image/x.png')$$, :'b'),
    '42501', null, 'a user cannot upload under another user''s folder');
select tests.throws_hint(
    $$insert into storage.objects (bucket_id, name) values ('generations', 'x.png')$$,
    '42501', null, 'a user cannot upload at the bucket root');
select tests.authenticate_as(:'b');
-- As the Storage API does it: past Supabase's delete guard, RLS decides.
select set_config('storage.allow_delete_query', 'true', true);
select is_empty(
    format($$delete from storage.objects where name = '%s/image/g1.png' returning id$$, :'a'),
    'a user cannot delete another user''s file');
select set_config('storage.allow_delete_query', 'false', true);
select is_empty(
    format($$update storage.objects set name = '%s/image/stolen.png' where bucket_id = 'generations'
             returning id$$, :'b'),
    'a user cannot move another user''s file into its folder');
select is_empty($$select name from storage.objects where bucket_id = 'generations'$$,
    'a user cannot list another user''s files');
select tests.clear_authentication();
select is_empty($$select name from storage.objects where bucket_id = 'generations'$$,
    'anon cannot list the files of the public bucket (downloads by URL need no policy)');
select tests.throws_hint(
    $$insert into storage.objects (bucket_id, name) values ('generations', 'anon/x.png')$$,
    '42501', null, 'anon cannot upload');
select tests.authenticate_as(:'a');
select results_eq($$select name from storage.objects where bucket_id = 'generations'$$,
    format('values (%L)', :'a' || '/image/g1.png'), 'a user lists its own files');
select throws_ok(
    format($$delete from storage.objects where name = '%s/image/g1.png'$$, :'a'), '42501', null,
    'a direct delete meets Supabase Storage''s guard (emulated in the test database)');
select set_config('storage.allow_delete_query', 'true', true);
select isnt_empty(
    format($$delete from storage.objects where name = '%s/image/g1.png' returning id$$, :'a'),
    'a user deletes its own file (as the Storage API does, with storage.allow_delete_query)');
select set_config('storage.allow_delete_query', 'false', true);

-- Keys paycore writes itself live under paycore:, where no caller's key can go.
select tests.authenticate_as_service_role();
select tests.create_user('credits-k@example.test') as k \gset
select from adjust_credits(:'k', 40, 'purchase');
select id as gk from start_generation(:'k', 'image', 'flux', 'p', 25) \gset
select is(
    (select idempotency_key from credit_transactions where generation_id = :'gk'),
    'paycore:generation:' || :'gk' || ':debit', 'a generation''s debit key is in paycore''s namespace'
);
select tests.throws_hint(
    format($$select adjust_credits(%L, 1, 'grant', null, '{}', %L)$$,
        :'k', 'paycore:generation:' || :'gk' || ':refund'),
    'PT400', 'invalid_argument', 'a caller cannot use a key in paycore''s namespace');
select tests.throws_hint(
    format($$select start_generation(%L, 'image', 'flux', 'p', 1, '{}', 'paycore:x')$$, :'k'),
    'PT400', 'invalid_argument', '... nor for a generation');
select lives_ok(
    format($$select adjust_credits(%L, 1, 'grant', null, '{}', %L)$$, :'k', 'generation:' || :'gk' || ':refund'),
    'the refund key of the old scheme is an ordinary caller key now');
select lives_ok(format($$select fail_generation(%L, 'x')$$, :'gk'),
    '... and fail_generation still refunds (the review''s attack)');
select is(get_user_balance(:'k'), 41::bigint, '... the whole cost');

-- Amounts and balances cannot overflow: PT errors, nothing written.
select tests.throws_hint(format($$select adjust_credits(%L, -9223372036854775808, 'spend')$$, :'k'), 'PT400',
    'invalid_argument', 'the smallest bigint is PT400, not an overflow');
select tests.throws_hint(format($$select adjust_credits(%L, 9223372036854775807, 'gift')$$, :'k'), 'PT400',
    'invalid_argument', 'the largest bigint is PT400');
select tests.create_user('credits-rich@example.test') as rich \gset
select from (select count(*) from generate_series(1, 1000) as n,
    lateral adjust_credits(:'rich', 1000000000000000 + 0 * n, 'gift')) as grants;
select is(get_user_balance(:'rich'), 1000000000000000000::bigint, 'a balance may reach 10^18');
select tests.throws_hint(format($$select adjust_credits(%L, 1, 'gift')$$, :'rich'), 'PT409',
    'balance_limit_exceeded', 'a grant beyond 10^18 is PT409 balance_limit_exceeded, not an overflow');
select is((select count(*)::int from credit_transactions where user_id = :'rich'), 1000, '... and writes nothing');
select results_eq(format($$select balance from adjust_credits(%L, -1, 'spend')$$, :'rich'),
    array[999999999999999999::bigint], 'a debit from the cap works');

-- Input sizes and white space.
select tests.throws_hint(format($$select adjust_credits(%L, 1, %L)$$, :'k', e'\t\n'), 'PT400',
    'invalid_argument', 'a type of tabs and newlines is blank');
select tests.throws_hint(format($$select adjust_credits(%L, 1, %L)$$, :'k', e'\u3000'), 'PT400',
    'invalid_argument', 'a type of an ideographic space is blank');
select tests.throws_hint(format($$select adjust_credits(%L, 1, 'gift', %L)$$, :'k', repeat('d', 1001)), 'PT400',
    'invalid_argument', 'a description over 1000 characters is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 1, 'gift', ' ')$$, :'k'), 'PT400',
    'invalid_argument', 'a blank description is PT400 (null means none)');
select tests.throws_hint(
    format($$select adjust_credits(%L, 1, 'gift', null, %L)$$, :'k', jsonb_build_object('x', repeat('y', 8200))),
    'PT400', 'invalid_argument', 'metadata over 8 kB is PT400');
select tests.throws_hint(format($$select adjust_credits(%L, 1, 'gift', null, '{}', ' ')$$, :'k'), 'PT400',
    'invalid_argument', 'a blank idempotency key is PT400');
select tests.throws_hint(format($$select start_generation(%L, 'image', %L, 'p', 1)$$, :'k', e'\u00a0'), 'PT400',
    'invalid_argument', 'a model of a no-break space is blank');
select tests.throws_hint(format($$select start_generation(%L, 'image', 'flux', %L, 1)$$, :'k', repeat('p', 20001)),
    'PT400', 'invalid_argument', 'a prompt over 20000 characters is PT400');
select tests.throws_hint(
    format($$select start_generation(%L, 'image', 'flux', 'p', 1, %L)$$,
        :'k', jsonb_build_object('x', repeat('y', 8200))),
    'PT400', 'invalid_argument', 'generation metadata over 8 kB is PT400');
select id as gs from start_generation(:'k', 'image', 'flux', 'p', 1) \gset
select tests.throws_hint(format($$select complete_generation(%L, '[]', '')$$, :'gs'), 'PT400',
    'invalid_argument', 'an empty preview path is PT400 (it would mark the preview ready)');
select tests.throws_hint(format($$select complete_generation(%L, '[]', null, %L)$$, :'gs', repeat('p', 1025)),
    'PT400', 'invalid_argument', 'a poster path over 1024 characters is PT400');
select tests.throws_hint(
    format($$select complete_generation(%L, %L)$$,
        :'gs', (select jsonb_agg('u' || n) from generate_series(1, 101) as n)),
    'PT400', 'invalid_argument', 'more than 100 result urls is PT400');
select tests.throws_hint(format($$select complete_generation(%L, '["ok", 1]')$$, :'gs'), 'PT400',
    'invalid_argument', 'a result url that is not a string is PT400');
select tests.throws_hint(format($$select complete_generation(%L, '["ok", " "]')$$, :'gs'), 'PT400',
    'invalid_argument', 'a blank result url is PT400');
select tests.throws_hint(format($$select fail_generation(%L, %L)$$, :'gs', e'\n'), 'PT400',
    'invalid_argument', 'a reason of a newline is blank');
select is((select status from generations where id = :'gs'), 'processing', 'refused calls left the generation open');

-- The service functions trust service_role itself, not a role that inherits it.
select tests.reset_role();
create role paycore_test_staff nologin;
grant service_role to paycore_test_staff;
grant usage on schema tests to paycore_test_staff;
select tests.act_as('paycore_test_staff', '{"role": "service_role"}');
select tests.throws_hint(format($$select adjust_credits(%L, 1000, 'grant')$$, :'k'), 'PT403', 'forbidden',
    'a role that inherits service_role cannot adjust credits');
select tests.throws_hint(format($$select start_generation(%L, 'image', 'm', 'p', 0)$$, :'k'), 'PT403', 'forbidden',
    '... nor start a generation');
select tests.throws_hint(format($$select fail_generation(%L, 'x')$$, :'gs'), 'PT403', 'forbidden',
    '... nor fail one (a refund)');
select tests.throws_hint(format($$select complete_generation(%L, '[]')$$, :'gs'), 'PT403', 'forbidden',
    '... nor complete one');

-- Balance rows and ledger rows leave only with their auth user.
select tests.reset_role();
select tests.throws_hint(format($$delete from credits where user_id = %L$$, :'k'), 'PT403', 'forbidden',
    'the owner cannot delete a balance row while its user exists (it would erase the ledger)');
select tests.throws_hint('truncate credits cascade', 'PT403', 'forbidden', 'balances cannot be truncated');
select is((select count(*)::int from credit_transactions where user_id = :'k'), 5, '... the ledger is intact');
select tests.throws_hint(format($$update credits set balance = 1000000000000000001 where user_id = %L$$, :'k'),
    '23514', null, 'a balance beyond 10^18 violates balance_is_at_most_10e18');

-- Deleting a user removes its balance, ledger and generations with it.
select tests.reset_role();
delete from auth.users where id = :'a';
select results_eq(
    format($$select (select count(*)::int from credits where user_id = %1$L),
                    (select count(*)::int from credit_transactions where user_id = %1$L),
                    (select count(*)::int from generations where user_id = %1$L)$$, :'a'),
    $$values (0, 0, 0)$$,
    'deleting an auth user cascades to its credits, ledger and generations'
);

select * from finish();
rollback;
