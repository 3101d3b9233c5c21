-- Undoes 0003.create-credits.
drop policy if exists generations_bucket_select on storage.objects;
drop policy if exists generations_bucket_insert_own on storage.objects;
drop policy if exists generations_bucket_update_own on storage.objects;
drop policy if exists generations_bucket_delete_own on storage.objects;
-- Supabase Storage refuses direct deletes on its tables (a statement trigger) unless this
-- setting is 'true' in the transaction: the Storage API sets it the same way. The bucket goes
-- only while it holds no file; a bucket with files is left for the Storage API to empty.
select set_config('storage.allow_delete_query', 'true', true);
delete from storage.buckets
where
    id = 'generations'
    and not exists (
        select 1 from storage.objects
        where bucket_id = 'generations'
    );

drop function public.fail_generation(uuid, text);
drop function public.complete_generation(uuid, jsonb, text, text);
drop function public.start_generation(uuid, text, text, text, bigint, jsonb, text);
drop function public.get_user_balance(uuid);
drop function public.adjust_credits(uuid, bigint, text, text, jsonb, text);
drop table public.credit_packages;
drop table public.credit_transactions;
drop table public.generations;
drop table public.credits;
drop function paycore.find_open_generation_error(uuid);
drop function paycore.apply_credit_change(uuid, bigint, text, text, jsonb, uuid, text);
drop function paycore.tg_credit_transactions__append_only();
