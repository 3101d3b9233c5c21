-- depends: 0005.validate-hardening-constraints
-- document-columns: what each client-readable column means, for the API reference that
-- scripts/gen_docs.py generates from the catalog (schema/10_core.sql, schema/20_credits.sql).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

comment on column public.events.app_id is
'The app the event happened in (e.g. cv, letters, rise), 1 to 100 characters, or null.';
comment on column public.events.type is
'What happened, 1 to 100 characters: paycore''s own types (generation.completed, ...) or a '
'client''s (track_event), which may not use paycore''s namespaces.';
comment on column public.events.subject_type is
'What the event is about (e.g. generation), with subject_id; null for client events.';
comment on column public.events.subject_id is
'The id of the subject (e.g. the generation''s uuid as text).';
comment on column public.events.meta is
'JSON object of context; at most 8 kB from clients.';

comment on column public.credits.balance is
'Credits the user holds now: never negative, at most 10^18, always the sum of its ledger rows.';
comment on column public.generations.type is
'The kind of output (image, video, ...), 1 to 100 characters.';
comment on column public.generations.model is
'The model that generates it, 1 to 100 characters.';
comment on column public.generations.status is
'pending or processing (open: complete_generation or fail_generation may follow), success or '
'failed (final).';
comment on column public.generations.result_urls is
'JSON array of the result URLs (strings), set by complete_generation.';
comment on column public.generations.preview_path is
'Storage path (bucket generations) of a preview image, set by complete_generation.';
comment on column public.generations.poster_path is
'Storage path (bucket generations) of a video poster image, set by complete_generation.';
comment on column public.generations.preview_status is
'none, pending, ready (complete_generation was given a preview path) or failed.';
comment on column public.generations.failure_reason is
'Why the generation failed, set by fail_generation; null otherwise.';
comment on column public.generations.completed_at is
'When the generation reached its final state (paycore.clock()); null while open.';
comment on column public.credit_transactions.amount is
'Credits added (> 0) or debited (< 0) by this row; never 0.';
comment on column public.credit_transactions.type is
'What the change was, 1 to 50 characters: the caller''s label (purchase, spend, ...) or '
'paycore''s (generation, refund).';
comment on column public.credit_transactions.description is
'Text for people, null or up to 1000 characters.';
comment on column public.credit_transactions.metadata is
'JSON object of context, at most 8 kB (e.g. the Stripe session or the model).';
comment on column public.credit_transactions.generation_id is
'The generation whose debit or refund this row is; null for other changes.';
comment on column public.credit_packages.id is
'Stable package id (a slug): what a credit checkout names as package_id.';
comment on column public.credit_packages.credits is
'Credits granted for one paid purchase of the package.';
comment on column public.credit_packages.price_amount is
'Price in minor units (cents) of currency.';
comment on column public.credit_packages.currency is
'ISO 4217 currency code, lowercase (usd, eur, ...).';
comment on column public.credit_packages.stripe_price_id is
'The Stripe Price (price_...) sold for this package: set per deployment, null until then.';
comment on column public.credit_packages.active is
'Listed to clients and sellable; inactive packages stay for the history of purchases.';
comment on column public.credit_packages.sort_order is
'Order in which clients list the packages (ascending).';
