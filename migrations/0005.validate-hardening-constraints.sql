-- depends: 0004.harden-foundation
-- validate-hardening-constraints: 0004 added two CHECKs as NOT VALID (new rows checked at
-- once); validating them here, in a transaction of its own, scans the tables under SHARE
-- UPDATE EXCLUSIVE, which blocks neither reads nor writes.
set local lock_timeout = '10s';
set local statement_timeout = '30min';

alter table public.events validate constraint source_is_known;
alter table public.credits validate constraint balance_is_at_most_10e18;
