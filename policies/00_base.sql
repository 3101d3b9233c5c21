-- base: privileges of the internals. paycore functions run only inside paycore's own
-- SECURITY DEFINER functions (as their owner): no client role executes them directly.

revoke all on schema paycore from public;

revoke all on function paycore.clock() from public;
revoke all on function paycore.caller_role() from public;
revoke all on function paycore.resolve_user_id(uuid) from public;
revoke all on function paycore.tg__set_updated_at() from public;
revoke all on function paycore.caller_is_trusted() from public;
revoke all on function paycore.tg__leave_only_with_user() from public;
revoke all on function paycore.setting(text) from public;
revoke all on function paycore.is_blank(text) from public;
revoke all on function paycore.check_text(text, text, integer, boolean) from public;
revoke all on function paycore.check_json_object(text, jsonb, integer) from public;
revoke all on function paycore.check_idempotency_key(text, text) from public;

revoke all on table paycore.settings from public;
