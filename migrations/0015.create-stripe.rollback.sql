-- Undoes 0015.create-stripe.
drop function public.retry_stripe_event(text);
drop function paycore.apply_stripe_event(jsonb);
drop function paycore.stripe_apply_stored(text);
drop function paycore.stripe_dispatch(jsonb);
drop function paycore.stripe_charge_refunded(jsonb);
drop function paycore.stripe_payment_log(jsonb, uuid, jsonb);
drop function paycore.stripe_invoice(jsonb);
drop function paycore.stripe_subscription(jsonb);
drop function paycore.stripe_checkout_session(jsonb);
drop function public.release_credit_checkout(uuid);
drop function public.attach_checkout_session(uuid, text, timestamptz);
drop function public.begin_subscription_checkout(uuid, text);
drop function public.get_platform_credit_status();
drop function public.begin_credit_checkout(uuid, text);
drop function paycore.platform_credits();
drop function paycore.stripe_user(jsonb, text);
drop function paycore.stripe_known_line(jsonb);
drop function paycore.stripe_price_id(jsonb);
drop function paycore.stripe_amount(jsonb);
drop function paycore.stripe_time(jsonb);
drop table public.invoice_logs;
drop table public.payment_logs;
drop table public.user_credit_purchases;
drop table public.checkout_sessions;
drop table paycore.stripe_events;
revoke usage on schema paycore from paycore_webhook;
delete from paycore.settings
where key = 'platform_credit_capacity';
delete from paycore.reserved_event_namespaces
where namespace in ('stripe', 'checkout');
