-- Undoes 0005.validate-hardening-constraints: both CHECKs back as 0004 left them, NOT VALID.
alter table public.events drop constraint source_is_known;
alter table public.events
add constraint source_is_known check (source in ('paycore', 'client')) not valid;
alter table public.credits drop constraint balance_is_at_most_10e18;
alter table public.credits
add constraint balance_is_at_most_10e18 check (balance <= 1000000000000000000) not valid;
