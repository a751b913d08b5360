# METADATA
# title: Tests of the bundle's data tables
# description: >-
#   The decision fails closed on inconsistent data, but a typo would still turn
#   a grant into a deny: these tests keep data.json consistent.
package authz.data_test

test_development_issuer_is_trusted if {
	some rule in data.authz.trusted_issuers
	rule.issuer == "urn:arbiter:dev-issuer"
}

test_production_and_staging_audiences if {
	{rule.audience: rule.environment | some rule in data.authz.audiences} == {
		"https://api.example.com": "production",
		"https://staging.api.example.com": "staging",
	}
}

test_every_action_has_a_scope_and_a_known_risk if {
	every spec in data.authz.actions {
		is_string(spec.scope)
		data.authz.risk_levels[spec.risk]
	}
}

test_every_risk_level_limits_token_lifetime if {
	every level in data.authz.risk_levels {
		is_number(level.max_ttl_s)
		is_boolean(level.agent_approval_required)
	}
}

test_every_trusted_issuer_names_its_tenant_claim if {
	every rule in data.authz.trusted_issuers {
		some tenant_rule in data.authz.tenant_claims
		tenant_rule.issuer == rule.issuer
	}
}

test_rule_ids_are_unique if {
	tables := [
		data.authz.trusted_issuers,
		data.authz.audiences,
		data.authz.tenant_claims,
		data.authz.subject_mappings,
		data.authz.issuance_rules.callers,
		data.authz.issuance_rules.exceptions,
	]
	ids := [rule.id | some table in tables; some rule in table]
	count(ids) == count({id | some id in ids})
}

# A callers rule without issuers matches no caller; one naming an issuer no
# trusted_issuers rule trusts would refuse its callers issuer_not_trusted.
test_every_caller_rule_names_trusted_issuers if {
	trusted := {rule.issuer | some rule in data.authz.trusted_issuers}
	every rule in data.authz.issuance_rules.callers {
		is_array(rule.issuers)
		count(rule.issuers) > 0
		every issuer in rule.issuers {
			issuer in trusted
		}
	}
}

caller_limits := ["clients", "audiences", "scopes"]

# A callers rule's limits, when given, are lists: the policy reads any other value as allowing
# nothing, so a typo would refuse the token service everything.
test_every_caller_limit_is_a_list if {
	every rule in data.authz.issuance_rules.callers {
		every limit in caller_limits {
			is_array(object.get(rule, limit, []))
		}
	}
}

test_every_exception_gives_a_reason if {
	every rule in data.authz.issuance_rules.exceptions {
		is_string(rule.id)
		rule.reason != ""
	}
}

test_every_pattern_has_at_most_one_wildcard if {
	patterns := {pattern |
		some table in [
			[rule.subjects | some rule in data.authz.subject_mappings],
			[rule.actions | some rule in data.authz.subject_mappings],
			[rule.subjects | some rule in data.authz.issuance_rules.callers],
			[rule.clients | some rule in data.authz.issuance_rules.exceptions],
			[rule[limit] | some rule in data.authz.issuance_rules.callers; some limit in caller_limits; rule[limit]],
			[data.authz.delegation.agents],
		]
		some list in table
		some pattern in list
	}
	count(patterns) > 0
	every pattern in patterns {
		one_wildcard_at_most(split(pattern, "*"))
	}
}

one_wildcard_at_most(parts) if count(parts) <= 2

one_wildcard_at_most([_, "", _])
