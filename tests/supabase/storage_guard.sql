-- Supabase Storage's wall against direct deletes, emulated for test databases.
--
-- On a Supabase project the storage tables carry statement-level BEFORE DELETE triggers that
-- refuse a DELETE with SQLSTATE 42501 unless the transaction has set
-- storage.allow_delete_query to 'true' (which the Storage API does before deleting). They are
-- recreated here with the same behaviour, so that a migration, rollback or test that deletes
-- storage rows directly fails in `make test` exactly as it would there. Idempotent: the test
-- harness installs it after every apply (tests/helpers.sql, tests/test_migrations.py).
create or replace function storage.protect_delete()
returns trigger
language plpgsql
as $$
begin
    if coalesce(current_setting('storage.allow_delete_query', true), 'false') <> 'true' then
        raise exception 'Direct deletion from storage tables is not allowed. Use the Storage API instead.'
        using errcode = '42501',
        hint = 'Delete through the Storage API, or set storage.allow_delete_query = ''true'' locally.';
    end if;
    return null;
end;
$$;
create or replace trigger protect_buckets_delete
before delete on storage.buckets
for each statement execute function storage.protect_delete();
create or replace trigger protect_objects_delete
before delete on storage.objects
for each statement execute function storage.protect_delete();
