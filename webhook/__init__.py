"""paycore webhook service: verifies Stripe webhooks and calls SQL functions (see webhook.app)."""
