# METADATA
# title: Tests of authz/decision
# description: One test per acceptance scenario of issue #3 (named after its number), then edge cases.
package authz.decision_test

import data.authz
import data.authz.fixtures_test as fx

# object.union merges nested objects; replace swaps one member as a whole.
replace(request, key, value) := object.union(object.remove(request, [key]), {key: value})

with_subject(changes) := object.union(fx.read_invoice, {"subject": object.union(fx.alice_subject, changes)})

approve_invoice(subject, context) := object.union(object.remove(fx.read_invoice, ["subject", "context"]), {
	"subject": subject,
	"action": {"name": "invoices.approve"},
	"context": context,
	"data_status": object.union(fx.fresh_status, {"approvals": {
		"source": "admin-api",
		"updated_at": fx.now - 5,
		"age_s": 5,
		"stale": false,
	}}),
})

test_scenario_01_allow_names_scope_mapping_and_entitlement if {
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
	result.allow == true
	result.obligations == []
	{reason | some reason in result.reasons} == {
		{"code": "issuer_trusted", "rule_id": "issuer-dev", "issuer": fx.dev_issuer},
		{"code": "environment_matched", "rule_id": "audience-production", "environment": "production"},
		{"code": "tenant_matched", "rule_id": "tenant-claim-dev", "tenant": "acme"},
		{"code": "scope_granted", "scope": "invoices.read"},
		{"code": "mapping_matched", "rule_id": "mapping-acme-employees", "subject": fx.alice},
		{"code": "entitlement_granted", "entitlement_id": "ent-alice-invoices-read", "subject": fx.alice},
	}
}

test_scenario_02_scope_missing if {
	result := authz.decision with input as with_subject({"scopes": ["expenses.read"]})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"scope_missing"}
	{"code": "scope_missing", "scope": "invoices.read", "message": "the token does not carry the scope this action requires"} in result.reasons
}

test_scenario_03_unknown_action if {
	result := authz.decision with input as object.union(fx.read_invoice, {"action": {"name": "invoices.delete"}})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"unknown_action"}
}

test_scenario_04_tenant_mismatch if {
	result := authz.decision with input as with_subject({"claims": {"tenant": "globex"}})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"tenant_mismatch"}
	some reason in result.reasons
	reason.token_tenants == ["globex"]
	reason.resource_tenant == "acme"
}

# An issuer vouches only for the tenants its tenant_claims rule lists (when it lists any): a
# trusted issuer of another tenant cannot mint a token that claims acme and act as Alice there.
test_issuer_not_trusted_for_the_claimed_tenant if {
	rules := [{"id": "tenant-claim-dev", "issuer": fx.dev_issuer, "claim": "tenant", "tenants": ["globex"]}]
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.tenant_claims as rules
	result.allow == false
	fx.codes(result) == {"tenant_issuer_not_trusted"}
	some reason in result.reasons
	reason.issuer == fx.dev_issuer
	reason.resource_tenant == "acme"
}

test_issuer_trusted_for_the_claimed_tenant if {
	rules := [{"id": "tenant-claim-dev", "issuer": fx.dev_issuer, "claim": "tenant", "tenants": ["globex", "acme"]}]
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.tenant_claims as rules
	result.allow == true
}

# A tenants member that is not a list fails closed, as other data errors do.
test_tenant_rule_with_tenants_not_a_list_vouches_for_nothing if {
	rules := [{"id": "tenant-claim-dev", "issuer": fx.dev_issuer, "claim": "tenant", "tenants": "acme"}]
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.tenant_claims as rules
	result.allow == false
	fx.codes(result) == {"tenant_issuer_not_trusted"}
}

# Nor does an object, even one whose values name the tenant: "in" would read its values.
test_tenant_rule_with_tenants_an_object_vouches_for_nothing if {
	rules := [{"id": "tenant-claim-dev", "issuer": fx.dev_issuer, "claim": "tenant", "tenants": {"primary": "acme"}}]
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.tenant_claims as rules
	result.allow == false
	fx.codes(result) == {"tenant_issuer_not_trusted"}
}

# Live entitlements have no schema on the way in: a grant whose grants, actions or tenants
# are not lists (a malformed feed) entitles nothing. "in" and "some ... in" would read an
# object's values, so {"tenants": {"primary": "acme"}} would count as tenant acme.
malformed_alice_grants := [
	{"grants": {"first": {"id": "ent-object-grants", "actions": ["invoices.read"], "tenants": ["acme"]}}},
	{"grants": [{"id": "ent-object-tenants", "actions": ["invoices.read"], "tenants": {"primary": "acme"}}]},
	{"grants": [{"id": "ent-object-actions", "actions": {"read": "invoices.read"}, "tenants": ["acme"]}]},
	{"grants": [{"id": "ent-string-tenants", "actions": ["invoices.read"], "tenants": "acme"}]},
	{"grants": [{"id": "ent-string-actions", "actions": "invoices.read", "tenants": ["acme"]}]},
]

test_malformed_entitlement_grants_entitle_nothing if {
	every alice in malformed_alice_grants {
		result := authz.decision with input as fx.read_invoice
			with data.entitlements as object.union(fx.entitlements, {fx.alice: alice})
		result.allow == false
		fx.codes(result) == {"no_entitlement"}
	}
}

test_malformed_entitlement_grants_entitle_no_actor if {
	subject := object.union(fx.alice_subject, {"act": [{"sub": fx.expense_assistant}]})
	every assistant in malformed_alice_grants {
		result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
			with data.entitlements as object.union(fx.entitlements, {fx.expense_assistant: assistant})
		result.allow == false
		fx.codes(result) == {"delegation_not_permitted"}
	}
}

test_scenario_05_staging_audience_in_production if {
	result := authz.decision with input as with_subject({"aud": [fx.staging_audience]})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"environment_mismatch"}
	some reason in result.reasons
	reason.token_environments == ["staging"]
}

test_scenario_06_permissions_claim_is_ignored_without_entitlement if {
	request := object.union(fx.read_invoice, {
		"subject": object.union(fx.alice_subject, {"sub": fx.bob, "claims": {"sub": fx.bob, "permissions": ["invoices.read"]}}),
	})
	result := authz.decision with input as request
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"no_entitlement"}
	some reason in result.reasons
	reason.ignored_claims == {"permissions": ["invoices.read"]}
}

test_scenario_07_entitlement_data_missing if {
	result := authz.decision with input as fx.read_invoice
	result.allow == false
	fx.codes(result) == {"entitlements_unavailable"}
}

test_scenario_07_entitlement_status_missing if {
	result := authz.decision with input as replace(fx.read_invoice, "data_status", {})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"entitlements_unavailable"}
}

test_scenario_07_entitlement_data_stale if {
	stale := {"entitlements": object.union(fx.fresh_status.entitlements, {"age_s": 900, "stale": true})}
	result := authz.decision with input as object.union(fx.read_invoice, {"data_status": stale})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"entitlements_unavailable"}
	some reason in result.reasons
	reason.status == {"updated_at": fx.fresh_status.entitlements.updated_at, "age_s": 900, "max_age_s": 300, "stale": true}
}

# The status told to the caller leaves out where the data comes from (the feed's name is the
# operator's business): source stays in the decision log's input.
test_entitlements_unavailable_does_not_name_the_source if {
	stale := {"entitlements": object.union(fx.fresh_status.entitlements, {"source": "hr-feed", "age_s": 900, "stale": true})}
	result := authz.decision with input as object.union(fx.read_invoice, {"data_status": stale})
		with data.entitlements as fx.entitlements
	some reason in result.reasons
	reason.code == "entitlements_unavailable"
	not "source" in object.keys(reason.status)
}

test_scenario_08_high_risk_action_with_old_token_needs_step_up if {
	subject := object.union(fx.alice_subject, {"scopes": ["invoices.write"], "token": {"age_s": 301}})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject, "action": {"name": "invoices.approve"}})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"token_too_old_for_risk"}
	some reason in result.reasons
	reason.age_s == 301
	reason.max_token_age_s == 300
	[obligation.type | some obligation in result.obligations] == ["step_up"]
}

test_scenario_09_permitted_agent_for_permitted_user if {
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": fx.agent_for_alice})
		with data.entitlements as fx.entitlements
	result.allow == true
	{
		"code": "actor_granted",
		"actor": fx.expense_assistant,
		"depth": 1,
		"mapping_rule_ids": ["mapping-expense-agents"],
		"entitlement_ids": ["ent-expense-assistant-invoices"],
	} in result.reasons
	{"code": "entitlement_granted", "entitlement_id": "ent-alice-invoices-read", "subject": fx.alice} in result.reasons
}

test_scenario_10_actor_without_grant if {
	subject := object.union(fx.alice_subject, {"act": [{"sub": "agent:travel-planner", "iss": fx.dev_issuer}]})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"delegation_not_permitted"}
	some reason in result.reasons
	reason.actor == "agent:travel-planner"
	reason.missing == ["entitlement", "mapping"]
}

test_scenario_10_actor_mapped_but_not_entitled if {
	subject := object.union(fx.alice_subject, {"act": [{"sub": "agent:expense-auditor"}]})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"delegation_not_permitted"}
	some reason in result.reasons
	reason.missing == ["entitlement"]
}

test_scenario_11_delegation_chain_too_deep if {
	chain := [fx.agent_actor, fx.agent_actor, fx.agent_actor]
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": object.union(fx.alice_subject, {"act": chain})})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"delegation_too_deep"}
	some reason in result.reasons
	reason.depth == 3
	reason.max_depth == 2
}

test_scenario_12_high_risk_through_agent_without_approval if {
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == false
	fx.codes(result) == {"approval_required"}
	result.obligations == [{
		"type": "approval_required",
		"action": "invoices.approve",
		"subject": fx.alice,
		"actor": fx.expense_assistant,
		"tenant": "acme",
		"message": "obtain a human approval and retry with context.approval_id",
	}]
}

test_scenario_12_high_risk_through_agent_with_accepted_approval if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == true
	result.obligations == []
	{"code": "approval_accepted", "approval_id": "apr-7f3a", "approved_by": fx.bob} in result.reasons
	{"code": "token_fresh", "age_s": 30, "age_from": "iat", "max_token_age_s": 300} in result.reasons
}

test_revoked_actor_is_named_by_its_depth if {
	revoked := {"revoked": true, "reason": "compromised agent", "revocation_id": "rev-7", "actor_depth": 2}
	result := authz.decision with input as with_subject({"revoked": revoked})
		with data.entitlements as fx.entitlements
	result.allow == false
	result.reasons == [{
		"code": "token_revoked",
		"message": "the token, its session, its client or an actor in its delegation chain has been revoked",
		"reason": "compromised agent",
		"revocation_id": "rev-7",
		"actor_depth": 2,
	}]
}

test_scenario_13_no_token if {
	result := authz.decision with input as replace(fx.read_invoice, "subject", fx.anonymous_subject)
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"unauthenticated"}
}

test_scenario_14_revoked_token if {
	revoked := {"revoked": true, "reason": "session_logout", "revocation_id": "rev-42"}
	result := authz.decision with input as with_subject({"revoked": revoked})
		with data.entitlements as fx.entitlements
	result.allow == false
	result.reasons == [{
		"code": "token_revoked",
		"message": "the token, its session, its client or an actor in its delegation chain has been revoked",
		"reason": "session_logout",
		"revocation_id": "rev-42",
	}]
}

test_scenario_15_every_failed_check_is_listed if {
	subject := object.union(fx.alice_subject, {
		"aud": [fx.staging_audience],
		"scopes": [],
		"claims": {"tenant": "globex"},
		"token": {"age_s": 3600},
		"act": [{"sub": "agent:travel-planner"}],
	})
	request := object.union(fx.read_invoice, {"subject": subject, "action": {"name": "invoices.approve"}})
	result := authz.decision with input as request
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {
		"environment_mismatch",
		"tenant_mismatch",
		"scope_missing",
		"token_too_old_for_risk",
		"delegation_not_permitted",
		"approval_required",
	}
	{obligation.type | some obligation in result.obligations} == {"step_up", "approval_required"}
}

# --- Edge cases ---------------------------------------------------------------

test_no_token_reports_request_problems_too if {
	request := replace(
		object.union(fx.read_invoice, {"subject": fx.anonymous_subject, "action": {"name": "nope"}}),
		"context", {"now": fx.now},
	)
	result := authz.decision with input as request
	fx.codes(result) == {"unauthenticated", "unknown_action", "environment_missing", "entitlements_unavailable"}
}

test_missing_environment_fails_closed if {
	result := authz.decision with input as object.union(fx.read_invoice, {"context": {"environment": 42}})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"environment_missing"}
}

test_untrusted_issuer if {
	result := authz.decision with input as with_subject({"iss": "https://evil.example"})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"issuer_not_trusted", "tenant_missing"}
}

test_resource_without_tenant_fails_closed if {
	result := authz.decision with input as replace(fx.read_invoice, "resource", {"type": "invoice", "id": "inv-1"})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"tenant_missing", "no_entitlement"}
}

test_resource_type_must_fit_the_action if {
	result := authz.decision with input as object.union(fx.read_invoice, {"resource": {"type": "payment", "properties": {"tenant": "acme"}}})
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"resource_type_mismatch"}
}

test_action_purpose_is_required if {
	subject := object.union(fx.alice_subject, {"scopes": ["payments.write"]})
	request := object.union(fx.read_invoice, {
		"subject": subject,
		"action": {"name": "payments.send"},
		"resource": {"type": "payment", "properties": {"tenant": "acme"}},
	})
	without_purpose := authz.decision with input as request
		with data.entitlements as fx.entitlements
	fx.codes(without_purpose) == {"purpose_not_allowed", "no_entitlement"}
	with_purpose := authz.decision with input as object.union(request, {"context": {"purpose": "vendor_payment"}})
		with data.entitlements as fx.entitlements
	fx.codes(with_purpose) == {"no_entitlement"}
}

test_unknown_risk_level_fails_closed if {
	actions := {"invoices.read": {"scope": "invoices.read", "risk": "extreme"}}
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.actions as actions
	fx.codes(result) == {"risk_level_unknown"}
}

test_missing_delegation_limit_means_no_delegation if {
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": fx.agent_for_alice})
		with data.entitlements as fx.entitlements
		with data.authz.delegation as {}
	fx.codes(result) == {"delegation_too_deep"}
}

test_expired_entitlement_is_ignored if {
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": fx.agent_for_alice, "context": {"now": 1830297600}})
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"delegation_not_permitted"}
}

# A feed that wrote Date.now() where epoch seconds belong (stored before Arbiter refused it,
# or with data.check_entitlements off): compared with input.context.now in seconds, the grant
# meant to lapse in an hour would entitle for millennia. It entitles nothing instead.
test_entitlement_expiring_in_milliseconds_entitles_nothing if {
	in_an_hour_ms := (fx.now + 3600) * 1000
	alice := {"grants": [{"id": "ent-ms", "actions": ["invoices.read"], "tenants": ["acme"], "expires_at": in_an_hour_ms}]}
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as object.union(fx.entitlements, {fx.alice: alice})
	result.allow == false
	fx.codes(result) == {"no_entitlement"}
}

test_entitlement_expiring_at_the_last_second_of_year_9999_still_entitles if {
	alice := {"grants": [{"id": "ent-far", "actions": ["invoices.read"], "tenants": ["acme"], "expires_at": 253402300799}]}
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as object.union(fx.entitlements, {fx.alice: alice})
	result.allow == true
}

test_actor_is_identified_by_client_id_without_sub if {
	subject := object.union(fx.alice_subject, {"act": [{"client_id": fx.expense_assistant}]})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_actor_without_identity_is_not_permitted if {
	subject := object.union(fx.alice_subject, {"act": [{"iss": fx.dev_issuer}]})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"delegation_not_permitted"}
}

test_high_risk_fresh_token_without_agent_is_allowed if {
	subject := object.union(fx.alice_subject, {"scopes": ["invoices.write"]})
	result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
	result.allow == true
	{"code": "token_fresh", "age_s": 30, "age_from": "iat", "max_token_age_s": 300} in result.reasons
}

test_high_risk_without_token_age_fails_closed if {
	subject := json.remove(object.union(fx.alice_subject, {"scopes": ["invoices.write"]}), ["token/age_s"])
	result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"token_too_old_for_risk"}
}

test_high_risk_with_token_age_not_a_number_fails_closed if {
	# null or false would otherwise compare as at most the limit.
	every age in [null, false, "30"] {
		token := object.union(fx.alice_subject.token, {"age_s": age})
		subject := object.union(fx.alice_subject, {"scopes": ["invoices.write"], "token": token})
		result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
			with data.entitlements as fx.entitlements
		fx.codes(result) == {"token_too_old_for_risk"}
	}
}

test_approval_with_expiry_not_a_number_is_not_accepted if {
	# A date string orders above every number in Rego: it would never expire.
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": object.union(fx.approvals["apr-7f3a"], {"expires_at": "2026-01-01T00:15:00Z"})}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	fx.codes(result) == {"approval_required"}
}

test_approval_expiring_in_milliseconds_is_not_accepted if {
	# Date.now() where epoch seconds belong: an approval for fifteen minutes would hold for millennia.
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": object.union(fx.approvals["apr-7f3a"], {"expires_at": (fx.now + 900) * 1000})}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	fx.codes(result) == {"approval_required"}
}

test_delegation_chain_that_is_not_a_list_is_not_ignored if {
	every act in [{"sub": fx.expense_assistant}, "agent", true] {
		subject := object.union(fx.alice_subject, {"scopes": ["invoices.write"], "act": act})
		result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
			with data.entitlements as fx.entitlements
			with data.approvals as fx.approvals
		result.allow == false
		"delegation_not_permitted" in fx.codes(result)
	}
}

test_approval_for_another_resource_is_not_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	request := object.union(approve_invoice(fx.agent_for_alice, context), {"resource": {"id": "inv-2"}})
	result := authz.decision with input as request
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	fx.codes(result) == {"approval_required"}
}

test_expired_approval_is_not_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a", "now": fx.now + 900})
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	fx.codes(result) == {"approval_required"}
}

test_approval_without_resource_binding_is_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": json.remove(fx.approvals["apr-7f3a"], ["resource_id"])}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	result.allow == true
}

test_approval_bound_to_the_current_actor_and_tenant_is_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": object.union(fx.approvals["apr-7f3a"], {"actor": fx.expense_assistant, "tenant": "acme"})}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	result.allow == true
}

test_approval_bound_to_another_actor_is_not_accepted if {
	# Approved for one agent: another agent acting for the same subject cannot use it.
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": object.union(fx.approvals["apr-7f3a"], {"actor": "agent:payments-bot"})}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	fx.codes(result) == {"approval_required"}
}

test_approval_bound_to_another_tenant_is_not_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	approvals := {"apr-7f3a": object.union(fx.approvals["apr-7f3a"], {"tenant": "globex"})}
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements with data.approvals as approvals
	fx.codes(result) == {"approval_required"}
}

test_stale_approvals_are_not_accepted if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	request := object.union(approve_invoice(fx.agent_for_alice, context), {"data_status": {"approvals": {"stale": true}}})
	result := authz.decision with input as request
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	fx.codes(result) == {"approval_required"}
}

test_policy_error_falls_back_to_a_full_deny if {
	result := authz.decision with authz.obligations as "not a set" with input as fx.read_invoice
	result == {
		"allow": false,
		"reasons": [{"code": "policy_error", "message": "the policy could not compute a decision"}],
		"obligations": [],
	}
}

test_token_without_identity_fails_closed if {
	subject := {
		"authenticated": true,
		"aud": [fx.production_audience],
		"scopes": ["invoices.read"],
		"claims": {},
		"revoked": {"revoked": false},
	}
	result := authz.decision with input as replace(fx.read_invoice, "subject", subject)
		with data.entitlements as fx.entitlements
	fx.codes(result) == {"issuer_not_trusted", "tenant_missing", "no_mapping", "no_entitlement"}
}

test_request_without_action_name_or_resource_type if {
	unnamed := authz.decision with input as replace(fx.read_invoice, "action", {})
		with data.entitlements as fx.entitlements
	fx.codes(unnamed) == {"unknown_action"}
	untyped := authz.decision with input as replace(fx.read_invoice, "resource", {"properties": {"tenant": "acme"}})
		with data.entitlements as fx.entitlements
	fx.codes(untyped) == {"resource_type_mismatch"}
}

test_max_token_age_that_is_not_a_number_is_never_met if {
	# Every number orders before every string: compared as is, "300" would call any token fresh.
	subject := object.union(fx.agent_for_alice, {"scopes": ["invoices.write"], "token": {"age_s": 86400}})
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	levels := object.union(data.authz.risk_levels, {"high": {"max_token_age_s": "300"}})
	result := authz.decision with input as approve_invoice(subject, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
		with data.authz.risk_levels as levels
	result.allow == false
	"token_too_old_for_risk" in fx.codes(result)
	not "token_fresh" in fx.codes(result)
}

test_approval_required_reason_comes_with_its_obligation_without_context if {
	request := object.union(object.remove(fx.read_invoice, ["context"]), {"subject": object.union(fx.agent_for_alice, {"scopes": ["invoices.write"]}), "action": {"name": "invoices.approve"}})
	result := authz.decision with input as request with data.entitlements as fx.entitlements
	{obligation.type | some obligation in result.obligations} == {"approval_required"}
	some reason in result.reasons
	reason.code == "approval_required"
	reason.approval_id == null
}

# An agent is known by data.authz.delegation.agents, whether it acts through an act claim, as
# the OAuth client of a token without one, or with a token of its own.
agent_client_for_alice := object.union(fx.alice_subject, {
	"client_id": fx.expense_assistant,
	"scopes": ["invoices.read", "invoices.write"],
})

test_agent_client_without_act_is_the_current_actor if {
	result := authz.decision with input as approve_invoice(agent_client_for_alice, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == false
	fx.codes(result) == {"approval_required"}
	[obligation] := result.obligations
	obligation.actor == fx.expense_assistant
	obligation.subject == fx.alice
}

test_agent_client_without_act_with_approval_is_granted_as_an_actor if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	result := authz.decision with input as approve_invoice(agent_client_for_alice, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == true
	{
		"code": "actor_granted",
		"actor": fx.expense_assistant,
		"depth": 1,
		"mapping_rule_ids": ["mapping-expense-agents"],
		"entitlement_ids": ["ent-expense-assistant-invoices"],
	} in result.reasons
}

test_agent_client_without_grant_is_refused if {
	result := authz.decision with input as with_subject({"client_id": "agent:travel-planner"})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"delegation_not_permitted"}
	some reason in result.reasons
	reason.actor == "agent:travel-planner"
}

# "*" stays inside one "/" segment, so the default agents pattern must be "agent:**": an agent
# whose id has a "/" would otherwise act with a user's token as an ordinary client, its own
# mapping, entitlement and the approval of high-risk actions checked by nobody.
test_agent_client_with_a_slash_in_its_id_is_an_actor if {
	subject := object.union(agent_client_for_alice, {"client_id": "agent:acme/expense-bot"})
	result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == false
	fx.codes(result) == {"delegation_not_permitted", "approval_required"}
	some reason in result.reasons
	reason.actor == "agent:acme/expense-bot"
}

test_agent_with_a_slash_in_its_id_needs_an_approval_for_high_risk if {
	agent := "agent:acme/expense-bot"
	subject := object.union(fx.alice_subject, {"sub": agent, "scopes": ["invoices.write"]})
	entitlements := object.union(fx.entitlements, {agent: {"grants": [{"id": "ent-bot", "actions": ["invoices.approve"], "tenants": ["acme"]}]}})
	mappings := array.concat(data.authz.subject_mappings, [{"id": "mapping-every-agent", "subjects": ["agent:**"], "actions": ["invoices.approve"]}])
	result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
		with data.entitlements as entitlements
		with data.authz.subject_mappings as mappings
	fx.codes(result) == {"approval_required"}
}

# An act chain naming others does not hide the agent presenting the token: were it to exchange
# a user's token naming that user as the actor, it would otherwise act under the user's grants.
test_agent_client_outside_its_act_chain_is_judged_as_the_current_actor if {
	subject := object.union(agent_client_for_alice, {"client_id": "agent:travel-planner", "act": [{"sub": fx.alice, "iss": fx.dev_issuer}]})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	result.allow == false
	some reason in result.reasons
	reason.code == "delegation_not_permitted"
	reason.actor == "agent:travel-planner"
	reason.depth == 1
}

test_agent_client_named_by_its_act_chain_is_judged_once if {
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": fx.agent_for_alice})
		with data.entitlements as fx.entitlements
	result.allow == true
	[grant] := [reason | some reason in result.reasons; reason.code == "actor_granted"]
	grant.actor == fx.expense_assistant
	grant.depth == 1
}

# input.context.tenant is the tenant an AuthZEN request was routed to (X-Tenant): a gateway
# bound to acme must not learn, through acme's route, how requests for another tenant's
# resources are decided.
test_resource_of_another_tenant_than_the_request_is_denied if {
	context := object.union(fx.read_invoice.context, {"tenant": "globex"})
	result := authz.decision with input as object.union(fx.read_invoice, {"context": context})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"request_tenant_mismatch"}
	some reason in result.reasons
	reason.request_tenant == "globex"
	reason.resource_tenant == "acme"
}

test_resource_of_the_request_tenant_is_allowed if {
	context := object.union(fx.read_invoice.context, {"tenant": "acme"})
	result := authz.decision with input as object.union(fx.read_invoice, {"context": context})
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_request_tenant_that_is_not_a_string_is_ignored if {
	context := object.union(fx.read_invoice.context, {"tenant": ["globex"]})
	result := authz.decision with input as object.union(fx.read_invoice, {"context": context})
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_client_that_is_not_an_agent_is_not_an_actor if {
	result := authz.decision with input as with_subject({"client_id": "acme-finance-portal"})
		with data.entitlements as fx.entitlements
	result.allow == true
	not "actor_granted" in fx.codes(result)
}

test_client_that_is_the_subject_is_not_its_own_actor if {
	subject := object.union(fx.alice_subject, {"sub": fx.expense_assistant, "client_id": fx.expense_assistant})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	result.allow == true
	not "actor_granted" in fx.codes(result)
}

test_agent_with_its_own_token_needs_an_approval_for_high_risk if {
	subject := object.union(fx.alice_subject, {"sub": fx.expense_assistant, "scopes": ["invoices.write"]})
	result := authz.decision with input as approve_invoice(subject, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == false
	fx.codes(result) == {"approval_required"}
	[obligation] := result.obligations
	obligation.subject == fx.expense_assistant
	obligation.actor == null
}

test_agent_with_its_own_token_reads_without_approval if {
	subject := object.union(fx.alice_subject, {"sub": fx.expense_assistant})
	result := authz.decision with input as object.union(fx.read_invoice, {"subject": subject})
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_without_agent_patterns_a_client_is_not_an_actor if {
	result := authz.decision with input as with_subject({"client_id": "agent:travel-planner"})
		with data.entitlements as fx.entitlements
		with data.authz.delegation as {"max_depth": 2}
	result.allow == true
}

# Step-up asks for a recent authentication, not a recent token: with auth_time (OpenID
# Connect), a token refreshed without the user signing in again is as old as that sign-in.
with_authentication_age(subject, auth_age_s) := object.union(subject, {"token": {"auth_time": fx.now - auth_age_s, "auth_age_s": auth_age_s}})

test_refreshed_token_of_an_old_sign_in_needs_step_up if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	subject := with_authentication_age(fx.agent_for_alice, 3600)
	result := authz.decision with input as approve_invoice(subject, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == false
	some reason in result.reasons
	reason.code == "token_too_old_for_risk"
	reason.age_s == 3600
	reason.age_from == "auth_time"
	[obligation] := result.obligations
	obligation.type == "step_up"
}

test_recent_sign_in_is_fresh_and_says_so if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	subject := with_authentication_age(fx.agent_for_alice, 60)
	result := authz.decision with input as approve_invoice(subject, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == true
	{"code": "token_fresh", "age_s": 60, "age_from": "auth_time", "max_token_age_s": 300} in result.reasons
}

test_without_auth_time_the_token_age_is_the_authentication_age if {
	context := object.union(fx.read_invoice.context, {"approval_id": "apr-7f3a"})
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
	result.allow == true
	{"code": "token_fresh", "age_s": 30, "age_from": "iat", "max_token_age_s": 300} in result.reasons
}

# An action's resource_types and purposes restrict it; given but not a list (a data error,
# "resource_types": "invoice"), they must allow nothing rather than switch the check off.
test_resource_types_that_are_not_a_list_allow_no_resource_type if {
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.actions["invoices.read"].resource_types as "invoice"
	result.allow == false
	fx.codes(result) == {"resource_type_mismatch"}
}

test_purposes_that_are_not_a_list_allow_no_purpose if {
	subject := object.union(fx.alice_subject, {"scopes": ["payments.write"]})
	request := object.union(fx.read_invoice, {
		"subject": subject,
		"action": {"name": "payments.send"},
		"resource": {"type": "payment", "properties": {"tenant": "acme"}},
		"context": {"purpose": "payroll"},
	})
	entitlements := object.union(fx.entitlements, {fx.alice: {"grants": [{"id": "ent-alice-payments", "actions": ["payments.send"], "tenants": ["acme"]}]}})
	result := authz.decision with input as request
		with data.entitlements as entitlements
		with data.authz.actions["payments.send"].purposes as "payroll"
	result.allow == false
	fx.codes(result) == {"purpose_not_allowed"}
}

# Only a risk level that says agent_approval_required: false lets an agent act without an
# approval: one that says "true", 1 or nothing (a data error) must not waive it.
test_approval_requirement_that_is_not_a_boolean_is_not_waived if {
	every level in [
		{"max_ttl_s": 300, "max_token_age_s": 300, "agent_approval_required": "true"},
		{"max_ttl_s": 300, "max_token_age_s": 300, "agent_approval_required": 1},
		{"max_ttl_s": 300, "max_token_age_s": 300},
	] {
		result := authz.decision with input as approve_invoice(fx.agent_for_alice, fx.read_invoice.context)
			with data.entitlements as fx.entitlements
			with data.approvals as fx.approvals
			with data.authz.risk_levels.high as level
		result.allow == false
		fx.codes(result) == {"approval_required"}
	}
}

test_unknown_risk_level_asks_for_no_approval if {
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
		with data.authz.actions["invoices.approve"].risk as "extreme"
	fx.codes(result) == {"risk_level_unknown"}
	result.obligations == []
}

# A risk level that is not an object (a data error, "high": "strict") has no limits to read:
# it must deny as unknown, not skip the freshness limit and the agent approval it stands for.
test_risk_level_that_is_not_an_object_is_unknown if {
	result := authz.decision with input as approve_invoice(fx.agent_for_alice, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
		with data.authz.risk_levels.high as "strict"
	result.allow == false
	"risk_level_unknown" in fx.codes(result)
}

# delegation.agents given but not a list (a data error, "agents": "agent:**") cannot tell
# agents apart: every party counts as one, rather than none (which would let an agent act
# with a user's token unjudged and without the approvals of high-risk actions).
test_agent_patterns_that_are_not_a_list_count_every_party_as_an_agent if {
	result := authz.decision with input as approve_invoice(agent_client_for_alice, fx.read_invoice.context)
		with data.entitlements as fx.entitlements
		with data.approvals as fx.approvals
		with data.authz.delegation.agents as "agent:**"
	result.allow == false
	fx.codes(result) == {"approval_required"}
	[obligation] := result.obligations
	obligation.actor == fx.expense_assistant
}

# An action without a scope (a data error) is granted to no token: the deny must say why.
test_action_without_a_scope_is_denied_with_a_reason if {
	result := authz.decision with input as fx.read_invoice
		with data.entitlements as fx.entitlements
		with data.authz.actions["invoices.read"] as {"risk": "low", "resource_types": ["invoice"]}
	result.allow == false
	result.reasons == [{
		"code": "scope_missing",
		"scope": null,
		"message": "the token does not carry the scope this action requires",
	}]
}
