package authz

import data.authz.evidence

# The checks of authz/decision. Each failed check adds one reason to denials;
# checks about the token only run when there is a verified token, so an
# anonymous request is told "unauthenticated" plus what is wrong with the
# request itself, not a list of consequences.

# METADATA
# title: Denials
# description: One reason per failed check of authz/decision.
denials contains reason if some reason in token_denials

denials contains reason if some reason in entitlement_data_denials

denials contains {
	"code": "unknown_action",
	"action": action_name,
	"message": "the action is not in data.authz.actions",
} if {
	not action_spec
}

denials contains {
	"code": "resource_type_mismatch",
	"action": action_name,
	"resource_type": resource_type,
	"allowed_resource_types": allowed,
	"message": "the action does not apply to this type of resource",
} if {
	allowed := action_spec.resource_types
	not listed(resource_type, allowed)
}

denials contains {
	"code": "purpose_not_allowed",
	"action": action_name,
	"purpose": request_purpose,
	"allowed_purposes": allowed,
	"message": "the action needs input.context.purpose set to one of its purposes",
} if {
	allowed := action_spec.purposes
	not listed(request_purpose, allowed)
}

# METADATA
# title: Listed
# description: >-
#   The value is in the list. A restriction that is given but is not a list (a data error,
#   "resource_types": "invoice") lists nothing, so it allows nothing rather than switching
#   its check off; "in" would also read an object's values.
listed(value, list) if {
	is_array(list)
	value in list
}

denials contains {
	"code": "risk_level_unknown",
	"action": action_name,
	"message": "the action's risk level is not in data.authz.risk_levels",
} if {
	action_spec
	not risk_policy
}

denials contains {
	"code": "environment_missing",
	"message": "the request does not say its environment (input.context.environment)",
} if {
	request_environment == ""
}

denials contains {
	"code": "environment_mismatch",
	"environment": request_environment,
	"token_environments": sort(token_environments),
	"message": "none of the token's audiences belongs to the request's environment",
} if {
	evidence.authenticated
	request_environment != ""
	count(environment_rule_ids) == 0
}

denials contains {
	"code": "tenant_missing",
	"missing": "resource",
	"message": "the resource names no tenant (input.resource.properties.tenant)",
} if {
	evidence.authenticated
	resource_tenant == ""
}

denials contains {
	"code": "tenant_missing",
	"missing": "token",
	"message": "the token carries no tenant in the claim data.authz.tenant_claims names for its issuer",
} if {
	count(tenant_rule_ids) == 0
	count(token_tenants) == 0
	evidence.authenticated
}

denials contains {
	"code": "tenant_mismatch",
	"resource_tenant": resource_tenant,
	"token_tenants": sort(token_tenants),
	"message": "the token's tenant differs from the resource's tenant",
} if {
	count(tenant_rule_ids) == 0
	evidence.authenticated
	resource_tenant != ""
	count(token_tenants) > 0
	not resource_tenant in token_tenants
}

denials contains {
	"code": "request_tenant_mismatch",
	"resource_tenant": resource_tenant,
	"request_tenant": input.context.tenant,
	"message": "the resource is not of the tenant the request is made in (input.context.tenant)",
} if {
	is_string(input.context.tenant)
	resource_tenant != input.context.tenant
}

denials contains {
	"code": "tenant_issuer_not_trusted",
	"issuer": evidence.subject_issuer,
	"resource_tenant": resource_tenant,
	"message": "the token claims the resource's tenant, but its tenant_claims rule does not trust its issuer for that tenant",
} if {
	count(tenant_rule_ids) == 0
	evidence.authenticated
	resource_tenant != ""
	resource_tenant in token_tenants
}

denials contains {
	"code": "scope_missing",
	# null for an action without a scope (a data error), which no token carries: a reason
	# holding action_spec.scope would be undefined there, and the deny would give none.
	"scope": object.get(action_spec, "scope", null),
	"message": "the token does not carry the scope this action requires",
} if {
	evidence.authenticated
	not scope_granted
}

denials contains {
	"code": "no_mapping",
	"subject": evidence.subject_id,
	"action": action_name,
	"message": "no subject_mappings rule covers this subject for this action",
} if {
	evidence.authenticated
	action_spec
	count(subject_mapping_ids) == 0
}

denials contains {
	"code": "no_entitlement",
	"subject": evidence.subject_id,
	"action": action_name,
	"tenant": resource_tenant,
	"ignored_claims": permission_hints,
	"message": "the subject holds no live entitlement for this action in this tenant; permission claims in the token are ignored",
} if {
	evidence.authenticated
	action_spec
	evidence.entitlements_available
	count(subject_entitlement_ids) == 0
}

denials contains {
	"code": "token_too_old_for_risk",
	"risk": action_spec.risk,
	"max_token_age_s": max_token_age_s,
	"age_s": authentication_age_s,
	"age_from": authentication_age_from,
	"message": "this risk level needs a more recent token",
} if {
	token_too_old
}

denials contains {
	"code": "delegation_too_deep",
	"depth": count(actors),
	"max_depth": max_delegation_depth,
	"message": "the delegation chain is longer than data.authz.delegation.max_depth",
} if {
	evidence.authenticated
	count(actors) > max_delegation_depth
}

denials contains {
	"code": "delegation_not_permitted",
	"actor": grant.actor,
	"depth": grant.depth,
	"missing": sort(missing_actor_evidence(grant)),
	"message": "an actor in the delegation chain holds no grant for this action",
} if {
	evidence.authenticated
	action_spec
	some grant in actor_grants
	count(missing_actor_evidence(grant)) > 0
}

denials contains {
	"code": "approval_required",
	"action": action_name,
	"approval_id": requested_approval_id,
	"message": "a high-risk action requested through an agent needs an accepted approval reference",
} if {
	evidence.authenticated
	approval_needed
	not accepted_approval
}

# METADATA
# title: Token denials
# description: >-
#   Checks of the presented token that both entrypoints share: present,
#   not revoked, from a trusted issuer.
token_denials contains {
	"code": "unauthenticated",
	"message": "no verified access token was presented",
} if {
	not evidence.authenticated
}

token_denials contains object.union(
	{"code": "token_revoked", "message": "the token, its session, its client or an actor in its delegation chain has been revoked"},
	object.filter(input.subject.revoked, ["reason", "revocation_id", "actor_depth"]),
) if {
	evidence.authenticated
	evidence.revoked
}

token_denials contains {
	"code": "issuer_not_trusted",
	"issuer": evidence.subject_issuer,
	"message": "no trusted_issuers rule trusts the token's issuer",
} if {
	evidence.authenticated
	count(evidence.trusted_issuer_rule_ids) == 0
}

# METADATA
# title: Entitlement data denials
# description: >-
#   Live entitlements are the source of permissions: when they are missing or
#   stale nothing can be permitted (fail closed).
entitlement_data_denials contains {
	"code": "entitlements_unavailable",
	"message": "entitlement data is not loaded, so no permission can be established",
} if {
	not evidence.entitlements_loaded
}

entitlement_data_denials contains {
	"code": "entitlements_unavailable",
	"status": object.filter(input.data_status.entitlements, ["updated_at", "age_s", "max_age_s", "stale"]),
	"message": "entitlement data is stale, so no permission can be established",
} if {
	evidence.entitlements_loaded
	not evidence.entitlements_available
}

# METADATA
# title: Obligations
# description: What the caller must do before asking again (step up, get an approval).
obligations contains {
	"type": "step_up",
	"max_token_age_s": max_token_age_s,
	"message": "authenticate again and retry with a fresh token",
} if {
	token_too_old
}

obligations contains {
	"type": "approval_required",
	"action": action_name,
	"subject": evidence.subject_id,
	"actor": current_actor,
	"tenant": resource_tenant,
	"message": "obtain a human approval and retry with context.approval_id",
} if {
	evidence.authenticated
	approval_needed
	not accepted_approval
}

# METADATA
# title: Grant reasons
# description: >-
#   The explanation of an allow, in the order the checks build on each other:
#   trusted issuer, environment and tenant rules, the scope, the mapping rule
#   and entitlement of the subject, each actor's grant, the freshness check
#   and the approval. An array built in order: no set to hash, nothing to sort.
grant_reasons := array.concat(
	array.concat(
		array.concat(
			[{"code": "issuer_trusted", "rule_id": id, "issuer": evidence.subject_issuer} | some id in sort(evidence.trusted_issuer_rule_ids)],
			[{"code": "environment_matched", "rule_id": id, "environment": request_environment} | some id in sort(environment_rule_ids)],
		),
		array.concat(
			[{"code": "tenant_matched", "rule_id": id, "tenant": resource_tenant} | some id in sort(tenant_rule_ids)],
			[{"code": "scope_granted", "scope": action_spec.scope}],
		),
	),
	array.concat(
		array.concat(
			[{"code": "mapping_matched", "rule_id": id, "subject": evidence.subject_id} | some id in sort(subject_mapping_ids)],
			[{"code": "entitlement_granted", "entitlement_id": id, "subject": evidence.subject_id} | some id in sort(subject_entitlement_ids)],
		),
		array.concat(actor_reasons, freshness_reasons),
	),
)

actor_reasons := [{
	"code": "actor_granted",
	"actor": grant.actor,
	"depth": grant.depth,
	"mapping_rule_ids": sort(grant.mapping_rule_ids),
	"entitlement_ids": sort(grant.entitlement_ids),
} |
	some depth in sort(object.keys(actor_grants))
	grant := actor_grants[depth]
]

freshness_reasons := array.concat(
	[{"code": "token_fresh", "age_s": authentication_age_s, "age_from": authentication_age_from, "max_token_age_s": max_token_age_s} | token_fresh],
	[{"code": "approval_accepted", "approval_id": approval_id, "approved_by": object.get(accepted_approval, "approved_by", null)} | approval_needed; accepted_approval],
)
