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

-- Storage bucket 'generations': public, so anyone downloads a file by its URL without a
-- policy; a signed-in user lists, writes and deletes only under its own folder
-- <auth.uid()>/... No SELECT policy for anon: listing would expose every user's files.
create policy generations_bucket_select_own on storage.objects
for select to authenticated
using (
    bucket_id = 'generations'
    and (storage.foldername(name))[1] = (select auth.uid()::text)
);
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
