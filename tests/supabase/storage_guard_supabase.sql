-- Supabase Storage's wall against direct deletes on a database whose storage schema is not
-- paycore's (tests/test_migrations.py shapes one like a hosted project): the same behaviour
-- as storage_guard.sql, installed unconditionally, owned by the storage tables' owner.
create function storage.protect_delete()
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
create trigger protect_buckets_delete
before delete on storage.buckets
for each statement execute function storage.protect_delete();
create trigger protect_objects_delete
before delete on storage.objects
for each statement execute function storage.protect_delete();
