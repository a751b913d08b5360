# METADATA
# title: Tests of authz/issuance
# description: Acceptance scenario 16 of issue #3 and the edge cases of governed issuance.
package authz.issuance_test

import data.authz
import data.authz.fixtures_test as fx

# The token service authenticates to Arbiter with its own (development) token.
token_service_subject := object.union(fx.alice_subject, {
	"sub": fx.token_service,
	"scopes": [],
	"claims": {"sub": fx.token_service},
})

# Scenario 16: the expense assistant asks for a token acting for Alice.
agent_request := {
	"client_id": fx.expense_assistant,
	"subject": fx.alice,
	"scopes": ["invoices.read", "expenses.write", "payments.write", "openid", "admin"],
	"audience": fx.production_audience,
	"purpose": "expense_filing",
}

# What Arbiter always adds: whether the client and subject are revoked (here: not).
not_revoked := {"revoked": {"client": {"revoked": false}, "subject": {"revoked": false}}}

issuance_input(issuance_request) := {
	"subject": token_service_subject,
	"action": {"name": "tokens.issue"},
	"resource": {"type": "token"},
	"context": {"now": fx.now, "request_id": "req-2"},
	"data_status": fx.fresh_status,
	"issuance": object.union(not_revoked, issuance_request),
}

refused(result) := {[refusal.scope, refusal.code] | some refusal in result.refused_scopes}

test_scenario_16_some_scopes_granted_some_refused if {
	result := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
	result.allow == true
	result.granted_scopes == ["expenses.write", "invoices.read", "openid"]
	refused(result) == {
		["payments.write", "no_mapping"],
		["payments.write", "no_entitlement"],
		["admin", "scope_unknown"],
	}
	result.max_ttl_s == 1800
	result.obligations == []
	{
		"code": "scope_granted",
		"scope": "invoices.read",
		"party": "client",
		"subject": fx.expense_assistant,
		"mapping_rule_ids": ["mapping-expense-agents"],
		"entitlement_ids": ["ent-expense-assistant-invoices"],
	} in result.reasons
	{
		"code": "scope_granted",
		"scope": "invoices.read",
		"party": "subject",
		"subject": fx.alice,
		"mapping_rule_ids": ["mapping-acme-employees"],
		"entitlement_ids": ["ent-alice-invoices-read"],
	} in result.reasons
	some exception in result.reasons
	exception.code == "scope_exception"
	exception.rule_id == "exception-openid-sign-in"
	exception.reason != ""
	{
		"code": "no_mapping",
		"scope": "payments.write",
		"party": "client",
		"subject": fx.expense_assistant,
		"message": "no subject_mappings rule covers this party for any action of the scope",
	} in result.reasons
}

test_high_risk_scope_shortens_the_lifetime if {
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read", "invoices.write"]}))
		with data.entitlements as fx.entitlements
	result.granted_scopes == ["invoices.read", "invoices.write"]
	result.max_ttl_s == 300
}

# A scope whose lifetime limit cannot be read is refused, not granted for
# default_max_ttl_s: the decision denies such an action risk_level_unknown, and a
# token minted for longer than its risk level allows would outlive that limit.
test_scope_of_an_action_with_an_unknown_risk_level_is_refused if {
	actions := object.union(data.authz.actions, {"invoices.approve": {"scope": "invoices.write", "risk": "High"}})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read", "invoices.write"]}))
		with data.entitlements as fx.entitlements
		with data.authz.actions as actions
	result.granted_scopes == ["invoices.read"]
	result.max_ttl_s == 3600
	refused(result) == {["invoices.write", "max_ttl_unknown"]}
	{
		"scope": "invoices.write",
		"code": "max_ttl_unknown",
		"action": "invoices.approve",
		"risk": "High",
		"message": "an action of the scope has no risk level in data.authz.risk_levels with a whole max_ttl_s of at least 1, so the token's lifetime cannot be bounded",
	} in result.reasons
}

# Each value, not some: a fractional limit would reach max_ttl_s, which the issuance contract
# wants whole, and deny every scope of the request policy_contract_violation.
test_scope_of_a_risk_level_without_a_usable_max_ttl_is_refused if {
	every max_ttl in [null, "300", 0, 300.5] {
		levels := object.union(data.authz.risk_levels, {"high": object.union(data.authz.risk_levels.high, {"max_ttl_s": max_ttl})})
		result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read", "invoices.write"]}))
			with data.entitlements as fx.entitlements
			with data.authz.risk_levels as levels
		result.granted_scopes == ["invoices.read"]
		refused(result) == {["invoices.write", "max_ttl_unknown"]}
	}
}

test_scope_of_an_exception_without_a_usable_max_ttl_is_refused if {
	every max_ttl in ["300", 0, 300.5] {
		exceptions := [{
			"id": "exception-month-end",
			"reason": "Month-end close needs the payment scope before the entitlement is provisioned.",
			"clients": [fx.invoice_worker],
			"scopes": ["payments.write"],
			"max_ttl_s": max_ttl,
		}]
		request := {"client_id": fx.invoice_worker, "scopes": ["invoices.read", "payments.write"], "audience": fx.production_audience}
		result := authz.issuance with input as issuance_input(request)
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.exceptions as exceptions
		result.granted_scopes == ["invoices.read"]
		refused(result) == {["payments.write", "max_ttl_unknown"]}
		{
			"scope": "payments.write",
			"code": "max_ttl_unknown",
			"rule_id": "exception-month-end",
			"message": "the exception rule's max_ttl_s, when given, must be a whole number of at least 1",
		} in result.reasons
	}
}

# A default limit that is given but not a number would lose to any number in
# min(): the token would get the risk level's (longer) lifetime. Nothing is granted.
test_unusable_default_max_ttl_refuses_everything if {
	every default_max_ttl in [null, "60", 0, 59.5] {
		rules := object.union(data.authz.issuance_rules, {"default_max_ttl_s": default_max_ttl})
		result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules as rules
		result.granted_scopes == []
		refused(result) == {["invoices.read", "request_denied"]}
		{
			"code": "max_ttl_unknown",
			"message": "data.authz.issuance_rules.default_max_ttl_s, when given, must be a whole number of at least 1",
		} in result.reasons
	}
}

test_client_credentials_need_the_client_entitlement if {
	request := {"client_id": fx.invoice_worker, "scopes": ["invoices.read", "payments.write"], "audience": fx.production_audience}
	result := authz.issuance with input as issuance_input(request)
		with data.entitlements as fx.entitlements
	result.granted_scopes == ["invoices.read"]
	refused(result) == {["payments.write", "no_entitlement"]}
	result.max_ttl_s == 3600
}

test_nothing_granted_is_a_deny if {
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["payments.write"]}))
		with data.entitlements as fx.entitlements
	result.allow == false
	result.granted_scopes == []
	result.max_ttl_s == 0
}

test_anonymous_caller_is_refused_everything if {
	anonymous := object.union(object.remove(issuance_input(agent_request), ["subject"]), {"subject": fx.anonymous_subject})
	result := authz.issuance with input as anonymous
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"unauthenticated", "scope_unknown", "no_mapping", "no_entitlement"}
	{refusal.code | some refusal in result.refused_scopes} == {"request_denied", "scope_unknown", "no_mapping", "no_entitlement"}
}

test_caller_must_be_an_issuance_caller if {
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": fx.alice_subject})
		with data.entitlements as fx.entitlements
	result.allow == false
	"caller_not_permitted" in fx.codes(result)
}

# Someone acting through the token service (an act chain in its token) must be a permitted
# caller too: the chain is checked as authz/decision checks it.
test_caller_acting_for_an_unpermitted_actor_is_refused if {
	delegated := object.union(token_service_subject, {"act": [{"sub": "agent:x"}]})
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
	result.allow == false
	result.granted_scopes == []
	some reason in result.reasons
	reason.code == "caller_not_permitted"
	reason.caller == "agent:x"
	reason.actor_depth == 1
}

# An actor nobody can identify (no sub, no client_id) is never a permitted caller, even for
# a callers rule that matches any id.
test_caller_acting_for_an_unidentifiable_actor_is_refused if {
	delegated := object.union(token_service_subject, {"act": [{}]})
	callers := [{"id": "any", "issuers": [fx.dev_issuer], "subjects": ["**"]}]
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == false
	some reason in result.reasons
	reason.code == "caller_not_permitted"
	reason.actor_depth == 1
}

# A callers rule binds the issuer too: a sub is an identity only within its issuer, so the
# same sub from another trusted issuer is not the token service.
acme_idp := "https://idp.acme.example"

acme_token_service_only := [{"id": "acme-token-service", "issuers": [acme_idp], "subjects": [fx.token_service]}]

test_caller_from_an_issuer_its_rule_does_not_name_is_refused if {
	# The token service's sub, signed by the (trusted) development issuer.
	result := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as acme_token_service_only
	result.allow == false
	result.granted_scopes == []
	some reason in result.reasons
	reason.code == "caller_not_permitted"
	reason.caller == fx.token_service
	reason.issuer == fx.dev_issuer
}

test_caller_from_an_issuer_its_rule_names_may_ask if {
	from_acme := object.union(token_service_subject, {"iss": acme_idp})
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": from_acme})
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as acme_token_service_only
	result.allow == true
}

# A rule that names no issuers (or not as a list) matches no caller: it fails closed rather
# than trust every issuer with the sub.
test_callers_rule_without_issuers_matches_no_caller if {
	every callers in [
		[{"id": "no-issuers", "subjects": [fx.token_service]}],
		[{"id": "issuers-not-a-list", "issuers": fx.dev_issuer, "subjects": [fx.token_service]}],
		[{"id": "issuers-empty", "issuers": [], "subjects": [fx.token_service]}],
	] {
		result := authz.issuance with input as issuance_input(agent_request)
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.callers as callers
		result.allow == false
		"caller_not_permitted" in fx.codes(result)
	}
}

# An actor is matched under its own iss when the act claim gives one, else under the token's.
test_actor_is_matched_under_its_own_issuer if {
	callers := [{"id": "dev-token-service", "issuers": [fx.dev_issuer], "subjects": [fx.token_service]}]
	delegated := object.union(token_service_subject, {"act": [{"sub": fx.token_service, "iss": acme_idp}]})
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == false
	some reason in result.reasons
	reason.code == "caller_not_permitted"
	reason.actor_depth == 1
	reason.issuer == acme_idp
}

test_actor_without_an_issuer_is_matched_under_the_token_issuer if {
	callers := [{"id": "dev-token-service", "issuers": [fx.dev_issuer], "subjects": [fx.token_service]}]
	every actor in [{"sub": fx.token_service}, {"sub": fx.token_service, "iss": ""}] {
		delegated := object.union(token_service_subject, {"act": [actor]})
		result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.callers as callers
		result.allow == true
	}
}

test_caller_acting_for_a_permitted_actor_may_ask if {
	delegated := object.union(token_service_subject, {"act": [{"sub": fx.token_service}]})
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_unknown_audience_and_missing_client_are_refused if {
	result := authz.issuance with input as issuance_input({"scopes": ["invoices.read"], "audience": "https://elsewhere.example"})
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"audience_unknown", "client_missing", "no_mapping", "no_entitlement"}
}

test_no_scope_requested if {
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": []}))
		with data.entitlements as fx.entitlements
	result.allow == false
	fx.codes(result) == {"no_scope_requested"}
}

test_issuance_fails_closed_without_entitlement_data if {
	result := authz.issuance with input as issuance_input(agent_request)
	result.allow == false
	"entitlements_unavailable" in fx.codes(result)
	result.granted_scopes == []
}

test_exception_can_be_bound_to_a_purpose if {
	exceptions := [{
		"id": "exception-month-end",
		"reason": "Month-end close needs the payment scope before the entitlement is provisioned.",
		"clients": [fx.invoice_worker],
		"scopes": ["payments.write"],
		"purposes": ["month_end_close"],
	}]
	request := {"client_id": fx.invoice_worker, "scopes": ["payments.write"], "audience": fx.production_audience}
	for_month_end := authz.issuance with input as issuance_input(object.union(request, {"purpose": "month_end_close"}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.exceptions as exceptions
	for_month_end.granted_scopes == ["payments.write"]
	for_month_end.max_ttl_s == 300
	for_curiosity := authz.issuance with input as issuance_input(object.union(request, {"purpose": "curiosity"}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.exceptions as exceptions
	for_curiosity.granted_scopes == []
}

test_policy_error_falls_back_to_a_full_deny if {
	result := authz.issuance with authz.issuance_reasons as "not a set" with input as issuance_input(agent_request)
	result == {
		"allow": false,
		"reasons": [{"code": "policy_error", "message": "the policy could not compute an issuance decision"}],
		"obligations": [],
		"granted_scopes": [],
		"refused_scopes": [],
		"max_ttl_s": 0,
	}
}

test_revoked_client_or_subject_is_refused_everything if {
	revoked := {"revoked": true, "reason": "offboarded", "revocation_id": "rev-9"}
	every party in ["client", "subject"] {
		request := object.union(agent_request, {"revoked": {party: revoked}})
		result := authz.issuance with input as issuance_input(request)
			with data.entitlements as fx.entitlements
		result.allow == false
		result.granted_scopes == []
		{"code": "party_revoked", "party": party, "reason": "offboarded", "revocation_id": "rev-9", "message": "the client or subject of the token to mint has been revoked"} in result.reasons
	}
}

test_parties_reported_not_revoked_are_granted if {
	request := object.union(agent_request, {"revoked": {"client": {"revoked": false}, "subject": {"revoked": false}}})
	result := authz.issuance with input as issuance_input(request)
		with data.entitlements as fx.entitlements
	result.allow == true
}

test_unknown_revocation_of_a_party_is_refused_everything if {
	every revoked in [null, {}, {"client": true}, {"client": {"revoked": "false"}}, {"client": {"revoked": false}}] {
		# The last one says nothing of the subject Alice: unknown as well.
		request := object.union(object.remove(agent_request, ["revoked"]), {"revoked": revoked})

		# Replaced, not merged: object.union would merge the fixture's revoked into it.
		result := authz.issuance with input as object.union(object.remove(issuance_input({}), ["issuance"]), {"issuance": request})
			with data.entitlements as fx.entitlements
		result.allow == false
		result.granted_scopes == []
		"party_revocation_unknown" in fx.codes(result)
	}
}

test_subject_that_is_not_a_non_empty_string_is_refused_everything if {
	every subject in [{"id": fx.alice}, [fx.alice], null, 0, ""] {
		result := authz.issuance with input as issuance_input(object.union(agent_request, {"subject": subject}))
			with data.entitlements as fx.entitlements
		result.allow == false
		"subject_invalid" in fx.codes(result)
	}
}

# A party must be mapped to and entitled to the same action of a scope: a mapping for
# invoices.list and an entitlement for invoices.read do not add up to invoices.read.
test_mapping_and_entitlement_of_different_actions_do_not_grant_the_scope if {
	mappings := [{"id": "mapping-lists-only", "subjects": [fx.expense_assistant], "actions": ["invoices.list"]}]
	entitlements := object.union(fx.entitlements, {fx.expense_assistant: {"grants": [
		{"id": "ent-reads-only", "actions": ["invoices.read"], "tenants": ["acme"]},
	]}})
	result := authz.issuance with input as issuance_input({
		"client_id": fx.expense_assistant,
		"scopes": ["invoices.read"],
		"audience": fx.production_audience,
	})
		with data.entitlements as entitlements
		with data.authz.subject_mappings as mappings
	result.allow == false
	refused(result) == {["invoices.read", "no_entitlement"]}
}

test_mapping_and_entitlement_of_the_same_action_grant_the_scope if {
	mappings := [{"id": "mapping-lists-only", "subjects": [fx.expense_assistant], "actions": ["invoices.list"]}]
	entitlements := object.union(fx.entitlements, {fx.expense_assistant: {"grants": [
		{"id": "ent-reads-only", "actions": ["invoices.read"], "tenants": ["acme"]},
		{"id": "ent-lists", "actions": ["invoices.list"], "tenants": ["acme"]},
	]}})
	result := authz.issuance with input as issuance_input({
		"client_id": fx.expense_assistant,
		"scopes": ["invoices.read"],
		"audience": fx.production_audience,
	})
		with data.entitlements as entitlements
		with data.authz.subject_mappings as mappings
	result.granted_scopes == ["invoices.read"]
	{
		"code": "scope_granted",
		"scope": "invoices.read",
		"party": "client",
		"subject": fx.expense_assistant,
		"mapping_rule_ids": ["mapping-lists-only"],
		"entitlement_ids": ["ent-lists"],
	} in result.reasons
}

# A grant that names no tenant entitles nothing in authz/decision, so it backs no scope
# either: "any tenant" means any of the grant's tenants, not none.
test_grant_without_a_tenant_does_not_grant_the_scope if {
	every tenants in [[], [""], [7], "acme", null] {
		entitlements := object.union(fx.entitlements, {fx.expense_assistant: {"grants": [
			{"id": "ent-no-tenant", "actions": ["invoices.read"], "tenants": tenants},
		]}})
		result := authz.issuance with input as issuance_input({
			"client_id": fx.expense_assistant,
			"scopes": ["invoices.read"],
			"audience": fx.production_audience,
		})
			with data.entitlements as entitlements
		result.allow == false
		refused(result) == {["invoices.read", "no_entitlement"]}
	}
}

test_grant_without_tenants_does_not_grant_the_scope if {
	entitlements := object.union(fx.entitlements, {fx.expense_assistant: {"grants": [
		{"id": "ent-no-tenants", "actions": ["invoices.read"]},
	]}})
	result := authz.issuance with input as issuance_input({
		"client_id": fx.expense_assistant,
		"scopes": ["invoices.read"],
		"audience": fx.production_audience,
	})
		with data.entitlements as entitlements
	result.allow == false
	refused(result) == {["invoices.read", "no_entitlement"]}
}

# A malformed grant (grants, actions or tenants not a list) backs no scope either: "in" and
# "some ... in" would read an object's values.
test_malformed_grant_does_not_grant_the_scope if {
	every assistant in [
		{"grants": {"first": {"id": "ent-object-grants", "actions": ["invoices.read"], "tenants": ["acme"]}}},
		{"grants": [{"id": "ent-object-tenants", "actions": ["invoices.read"], "tenants": {"primary": "acme"}}]},
		{"grants": [{"id": "ent-object-actions", "actions": {"read": "invoices.read"}, "tenants": ["acme"]}]},
	] {
		result := authz.issuance with input as issuance_input({
			"client_id": fx.expense_assistant,
			"scopes": ["invoices.read"],
			"audience": fx.production_audience,
		})
			with data.entitlements as object.union(fx.entitlements, {fx.expense_assistant: assistant})
		result.allow == false
		refused(result) == {["invoices.read", "no_entitlement"]}
	}
}

# The client acts for the subject, so a scope is backed only by an action both may take in a
# tenant both may take it in: authz/decision denies every request of a delegated token whose
# actor lacks the action in the resource's tenant, and a resource server that trusts the scope
# alone would let the client do what neither the client nor the subject may do together.
test_client_and_subject_entitled_to_different_actions_do_not_grant_the_scope if {
	entitlements := object.union(fx.entitlements, {
		fx.expense_assistant: {"grants": [{"id": "ent-assistant-lists", "actions": ["invoices.list"], "tenants": ["acme"]}]},
		fx.alice: {"grants": [{"id": "ent-alice-reads", "actions": ["invoices.read"], "tenants": ["acme"]}]},
	})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
		with data.entitlements as entitlements
	result.allow == false
	result.granted_scopes == []
	refused(result) == {["invoices.read", "no_shared_entitlement"]}
}

test_client_and_subject_entitled_in_different_tenants_do_not_grant_the_scope if {
	entitlements := object.union(fx.entitlements, {
		fx.expense_assistant: {"grants": [{"id": "ent-assistant-globex", "actions": ["invoices.read"], "tenants": ["globex"]}]},
		fx.alice: {"grants": [{"id": "ent-alice-acme", "actions": ["invoices.read"], "tenants": ["acme"]}]},
	})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
		with data.entitlements as entitlements
	result.allow == false
	refused(result) == {["invoices.read", "no_shared_entitlement"]}
	{
		"scope": "invoices.read",
		"code": "no_shared_entitlement",
		"message": "the client and the subject hold no live entitlement for one same action of the scope in one same tenant",
	} in result.reasons
}

# The grant explanation names only the entitlements that back the shared action and tenant.
test_only_shared_entitlements_explain_the_grant if {
	entitlements := object.union(fx.entitlements, {
		fx.expense_assistant: {"grants": [
			{"id": "ent-assistant-globex", "actions": ["invoices.read"], "tenants": ["globex"]},
			{"id": "ent-assistant-acme", "actions": ["invoices.list"], "tenants": ["acme"]},
		]},
		fx.alice: {"grants": [
			{"id": "ent-alice-reads", "actions": ["invoices.read"], "tenants": ["acme"]},
			{"id": "ent-alice-lists", "actions": ["invoices.list"], "tenants": ["acme", "globex"]},
		]},
	})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
		with data.entitlements as entitlements
	result.granted_scopes == ["invoices.read"]
	{
		"code": "scope_granted",
		"scope": "invoices.read",
		"party": "client",
		"subject": fx.expense_assistant,
		"mapping_rule_ids": ["mapping-expense-agents"],
		"entitlement_ids": ["ent-assistant-acme"],
	} in result.reasons
	{
		"code": "scope_granted",
		"scope": "invoices.read",
		"party": "subject",
		"subject": fx.alice,
		"mapping_rule_ids": ["mapping-acme-employees"],
		"entitlement_ids": ["ent-alice-lists"],
	} in result.reasons
}

# An exception is granted only as the explicit, explained rule the design asks for: one
# without an id or a reason would grant with no scope_exception reason to say why, and one
# whose scopes or purposes are not lists would be read through an object's values.
test_malformed_exception_grants_nothing if {
	month_end := {
		"id": "exception-month-end",
		"reason": "Month-end close needs the payment scope before the entitlement is provisioned.",
		"clients": [fx.invoice_worker],
		"scopes": ["payments.write"],
	}
	every exception in [
		object.remove(month_end, ["id"]),
		object.union(month_end, {"id": ""}),
		object.union(month_end, {"id": 7}),
		object.remove(month_end, ["reason"]),
		object.union(month_end, {"reason": ""}),
		object.union(month_end, {"reason": ["why"]}),
		object.union(month_end, {"scopes": {"payment": "payments.write"}}),
		object.union(month_end, {"purposes": {"close": "month_end_close"}}),
	] {
		request := {"client_id": fx.invoice_worker, "scopes": ["payments.write"], "audience": fx.production_audience, "purpose": "month_end_close"}
		result := authz.issuance with input as issuance_input(request)
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.exceptions as [exception]
		result.allow == false
		result.granted_scopes == []
	}
}

test_well_formed_exception_grants if {
	exception := {
		"id": "exception-month-end",
		"reason": "Month-end close needs the payment scope before the entitlement is provisioned.",
		"clients": [fx.invoice_worker],
		"scopes": ["payments.write"],
		"purposes": ["month_end_close"],
	}
	request := {"client_id": fx.invoice_worker, "scopes": ["payments.write"], "audience": fx.production_audience, "purpose": "month_end_close"}
	result := authz.issuance with input as issuance_input(request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.exceptions as [exception]
	result.granted_scopes == ["payments.write"]
	{"code": "scope_exception", "scope": "payments.write", "rule_id": "exception-month-end", "reason": exception.reason} in result.reasons
}

# An agent client minting for a subject acts for it: the token's current actor. Where the
# data allows no delegation (max_depth 0, or no limit given), authz/decision denies every
# request of that token delegation_too_deep, so nothing is granted for it either.
test_agent_client_minting_for_a_subject_needs_delegation if {
	every delegation in [{"max_depth": 0, "agents": ["agent:**"]}, {"agents": ["agent:**"]}] {
		result := authz.issuance with input as issuance_input(agent_request)
			with data.entitlements as fx.entitlements
			with data.authz.delegation as delegation
		result.allow == false
		result.granted_scopes == []
		{
			"code": "delegation_too_deep",
			"depth": 1,
			"max_depth": object.get(delegation, "max_depth", 0),
			"message": "the client is an agent acting for the subject, and data.authz.delegation.max_depth allows no delegation",
		} in result.reasons
	}
}

# Without delegation the same data grants: the agent minting for itself, or a client that
# is not an agent minting for a subject (its token names no actor).
test_agent_client_without_a_subject_needs_no_delegation if {
	no_delegation := {"max_depth": 0, "agents": ["agent:**"]}
	for_itself := authz.issuance with input as issuance_input(object.remove(agent_request, ["subject"]))
		with data.entitlements as fx.entitlements
		with data.authz.delegation as no_delegation
	for_itself.allow == true
	as_itself := authz.issuance with input as issuance_input(object.union(agent_request, {"subject": fx.expense_assistant}))
		with data.entitlements as fx.entitlements
		with data.authz.delegation as no_delegation
	as_itself.allow == true
	not_an_agent := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.delegation as {"max_depth": 0, "agents": ["agent:payments-*"]}
	not_an_agent.allow == true
}

# Without default_max_ttl_s, a scope granted by an exception that gives no max_ttl_s and
# envelops no action has no limit at all: an allow without a lifetime, which Arbiter can
# only turn into policy_contract_violation. The policy refuses the scope, naming why.
test_scope_without_any_lifetime_limit_is_refused if {
	rules := object.remove(data.authz.issuance_rules, ["default_max_ttl_s"])
	exception := object.remove(data.authz.issuance_rules.exceptions[0], ["max_ttl_s"])
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["openid", "invoices.read"]}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules as object.union(rules, {"exceptions": [exception]})
	result.granted_scopes == ["invoices.read"]
	result.max_ttl_s == 3600
	refused(result) == {["openid", "max_ttl_unknown"]}
	{
		"scope": "openid",
		"code": "max_ttl_unknown",
		"message": "no lifetime limit applies to the scope: it envelops no action, its exception rules give no max_ttl_s and data.authz.issuance_rules has no default_max_ttl_s",
	} in result.reasons
	alone := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["openid"]}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules as object.union(rules, {"exceptions": [exception]})
	alone.allow == false
	alone.max_ttl_s == 0
}

# A scope that envelops no action is granted only by an exception: when none applies to this
# client (or purpose), that is the refusal, not a mapping or entitlement it could never have.
test_exception_only_scope_without_an_applicable_exception_is_refused_no_exception if {
	exception := object.union(data.authz.issuance_rules.exceptions[0], {"clients": ["web-*"]})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["openid", "invoices.read"]}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.exceptions as [exception]
	result.granted_scopes == ["invoices.read"]
	refused(result) == {["openid", "no_exception"]}
	{
		"scope": "openid",
		"code": "no_exception",
		"message": "the scope envelops no action, so only an exception rule grants it, and none applies to this client and purpose",
	} in result.reasons
}

# --- Caller limits --------------------------------------------------------------

# The development token service's callers rule, with the limits of each test laid over it.
limited_caller(limits) := [object.union(
	{"id": "dev-token-service", "issuers": [fx.dev_issuer], "subjects": [fx.token_service]},
	limits,
)]

# A token service limited to some clients asks for no other: one compromised or misconfigured
# token service cannot mint for every client.
test_caller_limited_to_clients_may_not_ask_for_another_client if {
	callers := limited_caller({"clients": ["agent:*"]})
	request := {"client_id": fx.invoice_worker, "scopes": ["invoices.read"], "audience": fx.production_audience}
	result := authz.issuance with input as issuance_input(request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == false
	result.granted_scopes == []
	refused(result) == {["invoices.read", "request_denied"]}
	{
		"code": "caller_not_permitted",
		"limit": "clients",
		"client_id": fx.invoice_worker,
		"caller": fx.token_service,
		"issuer": fx.dev_issuer,
		"message": "no issuance_rules.callers rule that covers this caller lets it ask for this client (its clients patterns)",
	} in result.reasons
}

test_caller_limited_to_clients_may_ask_for_them if {
	callers := limited_caller({"clients": ["agent:*"]})
	result := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == true
	result.granted_scopes == ["expenses.write", "invoices.read", "openid"]
}

test_caller_limited_to_audiences_may_not_ask_for_another_audience if {
	callers := limited_caller({"audiences": [fx.staging_audience]})
	result := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == false
	result.granted_scopes == []
	{
		"code": "caller_not_permitted",
		"limit": "audiences",
		"audience": fx.production_audience,
		"caller": fx.token_service,
		"issuer": fx.dev_issuer,
		"message": "no issuance_rules.callers rule that covers this caller and lets it ask for this client lets it ask for this audience (its audiences patterns)",
	} in result.reasons
}

test_caller_limited_to_audiences_may_ask_for_them if {
	callers := limited_caller({"audiences": ["https://staging.*"]})
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"audience": fx.staging_audience}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == true
	result.granted_scopes == ["expenses.write", "invoices.read", "openid"]
}

# Scopes beyond the caller's are refused one by one, naming them; the others are judged as ever.
test_caller_limited_to_scopes_is_refused_the_others if {
	callers := limited_caller({"scopes": ["invoices.*", "openid"]})
	result := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == true
	result.granted_scopes == ["invoices.read", "openid"]
	refused(result) == {
		["expenses.write", "caller_not_permitted"],
		["payments.write", "caller_not_permitted"],
		["payments.write", "no_mapping"],
		["payments.write", "no_entitlement"],
		["admin", "caller_not_permitted"],
		["admin", "scope_unknown"],
	}
	{
		"scope": "expenses.write",
		"code": "caller_not_permitted",
		"limit": "scopes",
		"caller": fx.token_service,
		"issuer": fx.dev_issuer,
		"message": "no issuance_rules.callers rule that covers this caller and lets it ask for this client and audience lets it ask for this scope (its scopes patterns)",
	} in result.reasons

	# The lifetime is that of the scopes granted, not of those refused.
	result.max_ttl_s == 3600
}

# Scope patterns are dotted, as actions are: "invoices.*" covers one level.
test_caller_scope_patterns_use_the_dot_as_delimiter if {
	callers := limited_caller({"scopes": ["invoices.*"]})
	exceptions := [{"id": "deep", "reason": "A scope two levels deep.", "clients": ["**"], "scopes": ["invoices.read.all"], "max_ttl_s": 60}]
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read", "invoices.read.all"]}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
		with data.authz.issuance_rules.exceptions as exceptions
	result.granted_scopes == ["invoices.read"]
	refused(result) == {["invoices.read.all", "caller_not_permitted"]}
}

# A limit that is given but not a list (a data error) allows nothing, as the policy's other
# data-shape checks do: reading it as "no limit" would let the caller mint for every client.
test_caller_limit_that_is_not_a_list_allows_nothing if {
	every limits in [
		{"clients": "agent:*"},
		{"clients": {"agent": "agent:*"}},
		{"clients": null},
		{"audiences": fx.production_audience},
		{"audiences": {"production": fx.production_audience}},
		{"scopes": "invoices.read"},
		{"scopes": {"read": "invoices.read"}},
		{"scopes": null},
	] {
		result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.callers as limited_caller(limits)
		result.allow == false
		result.granted_scopes == []
		some reason in result.reasons
		reason.code == "caller_not_permitted"
	}
}

# An empty list allows nothing either: the caller may ask for no such value.
test_caller_limit_that_is_an_empty_list_allows_nothing if {
	every limits in [{"clients": []}, {"audiences": []}, {"scopes": []}] {
		result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read"]}))
			with data.entitlements as fx.entitlements
			with data.authz.issuance_rules.callers as limited_caller(limits)
		result.allow == false
		result.granted_scopes == []
	}
}

# Each callers rule is one permission, whole: a client one rule allows and an audience another
# allows do not add up to a request neither allows.
test_caller_limits_of_different_rules_do_not_add_up if {
	callers := array.concat(
		limited_caller({"id": "agents-in-staging", "clients": [fx.expense_assistant], "audiences": [fx.staging_audience]}),
		limited_caller({"id": "workers-in-production", "clients": [fx.invoice_worker], "audiences": [fx.production_audience]}),
	)
	refused_request := authz.issuance with input as issuance_input(agent_request)
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	refused_request.allow == false
	some reason in refused_request.reasons
	reason.code == "caller_not_permitted"
	reason.limit == "audiences"

	staging := authz.issuance with input as issuance_input(object.union(agent_request, {"audience": fx.staging_audience}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	staging.allow == true
}

test_caller_scope_limits_of_different_rules_do_not_add_up if {
	callers := array.concat(
		limited_caller({"id": "reads-in-production", "audiences": [fx.production_audience], "scopes": ["invoices.read"]}),
		limited_caller({"id": "expenses-in-staging", "audiences": [fx.staging_audience], "scopes": ["expenses.*"]}),
	)
	result := authz.issuance with input as issuance_input(object.union(agent_request, {"scopes": ["invoices.read", "expenses.write"]}))
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.granted_scopes == ["invoices.read"]
	refused(result) == {["expenses.write", "caller_not_permitted"]}
}

# An actor acting through the token service is held to its own rules' limits too.
test_actor_is_held_to_its_callers_rule_limits if {
	other_service := "spiffe://acme.example/ns/identity/sa/other-token-service"
	callers := array.concat(
		limited_caller({}),
		[{"id": "other", "issuers": [fx.dev_issuer], "subjects": [other_service], "clients": [fx.invoice_worker], "scopes": ["invoices.read"]}],
	)
	delegated := object.union(token_service_subject, {"act": [{"sub": other_service}]})
	result := authz.issuance with input as object.union(issuance_input(agent_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	result.allow == false
	{
		"code": "caller_not_permitted",
		"limit": "clients",
		"client_id": fx.expense_assistant,
		"caller": other_service,
		"issuer": fx.dev_issuer,
		"actor_depth": 1,
		"message": "no issuance_rules.callers rule that covers this caller lets it ask for this client (its clients patterns)",
	} in result.reasons

	worker_request := {"client_id": fx.invoice_worker, "scopes": ["invoices.read", "payments.write"], "audience": fx.production_audience}
	worker := authz.issuance with input as object.union(issuance_input(worker_request), {"subject": delegated})
		with data.entitlements as fx.entitlements
		with data.authz.issuance_rules.callers as callers
	worker.granted_scopes == ["invoices.read"]
	some refusal in worker.reasons
	refusal.code == "caller_not_permitted"
	refusal.scope == "payments.write"
	refusal.actor_depth == 1
}
