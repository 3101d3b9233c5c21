-- coaching data: readings and their versions, get_reading, partner matchings, and who
-- sees what.
begin;
select plan(49);

select has_table('public', 'coach_readings', 'public.coach_readings exists');
select columns_are('public', 'coach_readings', array[
    'id', 'user_id', 'reading_type', 'status', 'current_version', 'metadata', 'created_at', 'updated_at'
]);
select has_table('public', 'reading_versions', 'public.reading_versions exists');
select col_is_unique('public', 'reading_versions', array['reading_id', 'version_number'],
    'a version number is unique per reading');
select has_table('public', 'partner_matchings', 'public.partner_matchings exists');
select col_is_unique('public', 'partner_matchings', array['user_id_1', 'user_id_2', 'matching_type'],
    'one matching per pair and type');

select tests.create_user('coach-a@example.test') as a \gset
select tests.create_user('coach-b@example.test') as b \gset
select tests.create_user('coach-c@example.test') as c \gset

-- Readings.
select tests.authenticate_as(:'a');
select to_jsonb(x) as r from create_reading('natal', 'First text', '{"source": "app"}') as x \gset
select tests.authenticate_as(:'a');
select results_eq(
    format($$select user_id, reading_type, status, current_version, metadata from public.coach_readings
             where id = (%L::jsonb ->> 'id')::uuid$$, :'r'),
    format($$values (%L::uuid, 'natal', 'active', 1, '{"source": "app"}'::jsonb)$$, :'a'),
    'create_reading creates the caller''s reading at version 1'
);
select (:'r'::jsonb ->> 'id') as rid \gset
select is((add_reading_version(:'rid', 'Second text')).version_number, 2, 'the next version is 2');
select is((add_reading_version(:'rid', 'Third text')).version_number, 3, '... then 3');
select results_eq(
    format('select version_number, content from public.reading_versions where reading_id = %L order by 1', :'rid'),
    $$values (1, 'First text'), (2, 'Second text'), (3, 'Third text')$$,
    'versions 1..3 with their texts'
);
select is((select current_version from public.coach_readings where id = :'rid'), 3,
    'current_version follows in the same transaction');
select is(
    get_reading(:'rid') - 'created_at' - 'updated_at' - 'versions' - 'id',
    format('{"user_id": "%s", "reading_type": "natal", "status": "active", "current_version": 3,
             "metadata": {"source": "app"}}', :'a')::jsonb,
    'get_reading returns the reading''s columns'
);
select is(
    (select jsonb_agg(v - 'id' - 'created_at') from jsonb_array_elements(get_reading(:'rid') -> 'versions') as v),
    '[{"version_number": 1, "content": "First text"}, {"version_number": 2, "content": "Second text"},
      {"version_number": 3, "content": "Third text"}]'::jsonb,
    '... with its versions in order'
);
select tests.throws_hint($$select create_reading('Natal Chart', 'x')$$, 'PT400', 'invalid_argument',
    'a reading type that is not a slug is PT400');
select tests.throws_hint($$select create_reading('natal', '   ')$$, 'PT400', 'invalid_argument',
    'blank content is PT400');
select tests.throws_hint(format('select create_reading(%L, %L)', 'natal', repeat('x', 100001)), 'PT400',
    'invalid_argument', 'content beyond 100000 characters is PT400');
select tests.throws_hint($$select create_reading('natal', 'x', '[]')$$, 'PT400', 'invalid_argument',
    'metadata that is not an object is PT400');
select tests.throws_hint(format($$select create_reading('natal', 'x', '{}', %L)$$, :'b'), 'PT403', 'forbidden',
    'a user cannot create a reading for another user');
select tests.throws_hint(format($$select add_reading_version(%L, null)$$, :'rid'), 'PT400', 'invalid_argument',
    'a version without content is PT400');

-- Another user sees nothing of it, and cannot add to it.
select tests.authenticate_as(:'b');
select tests.throws_hint(format($$select get_reading(%L)$$, :'rid'), 'PT404', 'not_found',
    'another user''s reading is PT404, as if it did not exist');
select tests.throws_hint(format($$select add_reading_version(%L, 'mine now')$$, :'rid'), 'PT404', 'not_found',
    'another user cannot add a version');
select is_empty('select 1 from public.coach_readings', 'another user reads no reading');
select is_empty('select 1 from public.reading_versions', '... and no version');
select tests.throws_hint(format($$select get_reading(%L)$$, gen_random_uuid()), 'PT404', 'not_found',
    'an unknown reading is PT404');
select tests.clear_authentication();
select throws_ok(format($$select get_reading(%L)$$, :'rid'), '42501', null, 'anon may not call get_reading');

-- The service role acts on any user's reading.
select tests.authenticate_as_service_role();
select is((add_reading_version(:'rid', 'From the service')).version_number, 4,
    'service_role adds a version to any reading');
select is(get_reading(:'rid') ->> 'current_version', '4', 'service_role reads any reading');
select is((create_reading('transit', 'x', '{}', :'b')).user_id, :'b'::uuid,
    'service_role creates a reading for a named user');
select tests.throws_hint($$select create_reading('transit', 'x')$$, 'PT400', 'invalid_argument',
    'service_role must name the user');
select tests.throws_hint(format($$select create_reading('transit', 'x', '{}', %L)$$, gen_random_uuid()),
    'PT404', 'not_found', 'an unknown user is PT404');
select tests.reset_role();

-- Versions are append-only; they go with their reading.
select throws_ok(format($$update public.reading_versions set content = 'x' where reading_id = %L$$, :'rid'),
    'PT403', null, 'a version cannot be edited, even by the owner');
select throws_ok(format($$delete from public.reading_versions where reading_id = %L$$, :'rid'),
    'PT403', null, 'a version cannot be deleted on its own');
select lives_ok(format($$delete from public.coach_readings where id = %L$$, :'rid'),
    'deleting the reading deletes its versions');
select is_empty(format('select 1 from public.reading_versions where reading_id = %L', :'rid'),
    '... all of them');

-- Partner matchings.
select tests.authenticate_as(:'a');
select to_jsonb(x) as m from save_matching(:'b', 'synastry', '{"score": 71}') as x \gset
select tests.authenticate_as(:'a');
select results_eq(
    format($$select user_id_1, user_id_2, matching_type, result, created_by from public.partner_matchings
             where id = (%L::jsonb ->> 'id')::uuid$$, :'m'),
    format($$values (least(%1$L::uuid, %2$L::uuid), greatest(%1$L::uuid, %2$L::uuid), 'synastry',
                     '{"score": 71}'::jsonb, %1$L::uuid)$$, :'a', :'b'),
    'a matching is stored with the pair in one order'
);
select tests.authenticate_as(:'b');
select is((save_matching(:'a', 'synastry', '{"score": 72}')).id, (:'m'::jsonb ->> 'id')::uuid,
    'B with A is the same matching as A with B');
select results_eq('select result, created_by from public.partner_matchings',
    format($$values ('{"score": 72}'::jsonb, %L::uuid)$$, :'b'),
    'the latest result wins; both users read it');
select tests.authenticate_as(:'a');
select is((select count(*)::int from public.partner_matchings), 1, 'the other user of the pair reads it too');
select isnt((save_matching(:'b', 'composite', '{"score": 1}')).id, (:'m'::jsonb ->> 'id')::uuid,
    'another matching type is another row');
select tests.throws_hint(format($$select save_matching(%L, 'synastry', '{}')$$, :'a'), 'PT400',
    'invalid_argument', 'a matching with oneself is PT400');
select tests.throws_hint(format($$select save_matching(%L, 'synastry', '{}')$$, gen_random_uuid()), 'PT404',
    'not_found', 'a matching with an unknown user is PT404');
select tests.throws_hint(format($$select save_matching(%L, 'synastry', '[1]')$$, :'b'), 'PT400',
    'invalid_argument', 'a result that is not an object is PT400');
select tests.throws_hint(format($$select save_matching(%L, 'synastry', '{}', '{"service": 1}')$$, :'b'), 'PT400',
    'invalid_argument', 'a user cannot write the metadata key service');
select tests.authenticate_as_service_role();
select is((save_matching(:'b', 'computed', '{"score": 9}', '{"service": {"v": 2}}', :'a')).created_by, null,
    'the service saves a matching (created_by null)');
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select save_matching(%L, 'computed', '{"score": 100}')$$, :'b'), 'PT403',
    'forbidden', 'a user cannot overwrite a matching the service saved');
select is((select result from public.partner_matchings where matching_type = 'computed'), '{"score": 9}',
    '... which is unchanged');
select tests.authenticate_as(:'c');
select is_empty('select 1 from public.partner_matchings', 'a third user reads no matching of the pair');
select tests.throws_hint(format($$select save_matching(%L, 'synastry', '{}', '{}', %L)$$, :'b', :'a'), 'PT403',
    'forbidden', 'a third user cannot save a matching for others');
select tests.reset_role();
delete from auth.users where id = :'b';
select is_empty(format('select 1 from public.partner_matchings where %L in (user_id_1, user_id_2)', :'a'),
    'a matching goes with either user');

select * from finish();
rollback;
