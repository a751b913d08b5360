# METADATA
# title: Test fixtures
# description: >-
#   Inputs and live data shared by the tests of the authz bundle. The
#   entitlements mirror examples/entitlements.json; the clock is fixed so that
#   every decision is replayable.
package authz.fixtures_test

now := 1767225600

dev_issuer := "urn:arbiter:dev-issuer"

production_audience := "https://api.example.com"

staging_audience := "https://staging.api.example.com"

alice := "user:alice@acme.example"

bob := "user:bob@acme.example"

invoice_worker := "spiffe://acme.example/ns/billing/sa/invoice-worker"

expense_assistant := "agent:expense-assistant"

token_service := "spiffe://acme.example/ns/identity/sa/token-service"

# The token of scenario 1: a development token for Alice, production audience,
# scope invoices.read, tenant acme.
alice_subject := {
	"authenticated": true,
	"iss": dev_issuer,
	"sub": alice,
	"aud": [production_audience],
	"scopes": ["invoices.read"],
	"act": [],
	"claims": {
		"iss": dev_issuer,
		"sub": alice,
		"aud": production_audience,
		"scope": "invoices.read",
		"tenant": "acme",
		"iat": now - 30,
		"exp": now + 570,
	},
	"token": {
		"alg": "EdDSA",
		"kid": "dev-1",
		"typ": "at+jwt",
		"iat": now - 30,
		"exp": now + 570,
		"jti": "tok-1",
		"age_s": 30,
		"ttl_s": 570,
		"fingerprint": "sha256:3b1f",
	},
	"revoked": {"revoked": false},
}

anonymous_subject := {
	"authenticated": false,
	"aud": [],
	"scopes": [],
	"act": [],
	"claims": {},
	"revoked": {"revoked": false},
}

fresh_status := {"entitlements": {
	"source": "file:examples/entitlements.json",
	"updated_at": now - 60,
	"age_s": 60,
	"max_age_s": 300,
	"stale": false,
}}

# Scenario 1: Alice reads invoice inv-1 of tenant acme in production.
read_invoice := {
	"subject": alice_subject,
	"action": {"name": "invoices.read"},
	"resource": {"type": "invoice", "id": "inv-1", "properties": {"tenant": "acme"}},
	"context": {"environment": "production", "now": now, "request_id": "req-1"},
	"data_status": fresh_status,
}

# The expense assistant acting for Alice (RFC 8693 act claim, flattened).
agent_actor := {"sub": expense_assistant, "client_id": expense_assistant, "iss": dev_issuer}

# Alice's token with invoices.write and a delegation chain naming the expense assistant.
agent_for_alice := object.union(alice_subject, {
	"client_id": expense_assistant,
	"scopes": ["invoices.read", "invoices.write"],
	"act": [agent_actor],
})

entitlements := {
	alice: {"grants": [
		{"id": "ent-alice-invoices-read", "actions": ["invoices.read", "invoices.list"], "tenants": ["acme"]},
		{"id": "ent-alice-invoices-approve", "actions": ["invoices.approve"], "tenants": ["acme"]},
		{"id": "ent-alice-expenses", "actions": ["expenses.*"], "tenants": ["acme"]},
	]},
	invoice_worker: {"grants": [{"id": "ent-invoice-worker-read", "actions": ["invoices.read", "invoices.list"], "tenants": ["acme"]}]},
	expense_assistant: {"grants": [
		{"id": "ent-expense-assistant-expenses", "actions": ["expenses.read", "expenses.submit"], "tenants": ["acme"]},
		{
			"id": "ent-expense-assistant-invoices",
			"actions": ["invoices.read", "invoices.list", "invoices.approve"],
			"tenants": ["acme"],
			"expires_at": 1830297600,
		},
	]},
}

approvals := {"apr-7f3a": {
	"action": "invoices.approve",
	"subject": alice,
	"resource_id": "inv-1",
	"approved_by": bob,
	"expires_at": now + 900,
}}

# METADATA
# title: Codes
# description: The set of reason codes of a result.
codes(result) := {reason.code | some reason in result.reasons}
