# METADATA
# title: Arbiter default authorization policy
# description: >-
#   Claims inform, policy decides. Scopes are a coarse envelope, claims are
#   evidence mapped by explicit rules in data.authz, permissions come from live
#   entitlements (data.entitlements), and every doubt fails closed. Entrypoints:
#   authz/decision (may this request proceed?) and authz/issuance (which scopes
#   may a token service mint now?).
# scope: package
package authz

import data.authz.evidence

# METADATA
# title: Access decision
# description: >-
#   Entrypoint answering one request. allow is true only when no check failed
#   and every piece of positive evidence is present; reasons explain the grant
#   on an allow and list every failed check on a deny.
# entrypoint: true
default decision := {
	"allow": false,
	"reasons": [{"code": "policy_error", "message": "the policy could not compute a decision"}],
	"obligations": [],
}

decision := {
	"allow": allow,
	"reasons": decision_reasons,
	"obligations": sort(obligations),
}

# METADATA
# title: Allow
# description: No check failed and the grant is backed by evidence on every axis.
default allow := false

allow if {
	count(denials) == 0
	evidence.authenticated
	count(evidence.trusted_issuer_rule_ids) > 0
	count(environment_rule_ids) > 0
	count(tenant_rule_ids) > 0
	scope_granted
	count(subject_mapping_ids) > 0
	count(subject_entitlement_ids) > 0
}

# METADATA
# title: Decision reasons
# description: The grant explanation on an allow, every failed check on a deny.
decision_reasons := grant_reasons if allow

else := sort(denials)

# --- What the request asks for ------------------------------------------------

# METADATA
# title: Action name
# description: input.action.name, or "" (an unknown action) when absent.
default action_name := ""

action_name := input.action.name if is_string(input.action.name)

# METADATA
# title: Action specification
# description: The data.authz.actions entry of the requested action (scope, risk, requirements).
action_spec := data.authz.actions[action_name]

# METADATA
# title: Risk policy
# description: >-
#   The data.authz.risk_levels entry for the action's risk, when it is an object. One that is
#   not (a data error, "high": "strict") has no limits to read: left undefined, the action is
#   denied risk_level_unknown instead of skipping its freshness limit.
risk_policy := policy if {
	policy := data.authz.risk_levels[action_spec.risk]
	is_object(policy)
}

# METADATA
# title: Resource type
# description: input.resource.type, or "" when absent.
default resource_type := ""

resource_type := input.resource.type if is_string(input.resource.type)

# METADATA
# title: Resource tenant
# description: input.resource.properties.tenant, or "" when the resource names no tenant.
default resource_tenant := ""

resource_tenant := input.resource.properties.tenant if is_string(input.resource.properties.tenant)

# METADATA
# title: Request environment
# description: input.context.environment, or "" when the caller did not say (which fails closed).
default request_environment := ""

request_environment := input.context.environment if is_string(input.context.environment)

# METADATA
# title: Request purpose
# description: input.context.purpose, or "" when the caller did not say.
default request_purpose := ""

request_purpose := input.context.purpose if is_string(input.context.purpose)

# --- What the token proves ----------------------------------------------------

# METADATA
# title: Scope granted
# description: The token carries the scope the action requires.
scope_granted if action_spec.scope in input.subject.scopes

# METADATA
# title: Token environments
# description: Environments the token's audiences map to (data.authz.audiences).
token_environments contains rule.environment if {
	some rule in data.authz.audiences
	rule.audience in input.subject.aud
}

# METADATA
# title: Environment rule ids
# description: Audience rules that map one of the token's audiences to the request's environment.
environment_rule_ids contains rule.id if {
	some rule in data.authz.audiences
	rule.audience in input.subject.aud
	rule.environment == request_environment
}

# METADATA
# title: Token tenants
# description: Tenants named by the claim that data.authz.tenant_claims assigns to the token's issuer.
token_tenants contains tenant if {
	some rule in data.authz.tenant_claims
	rule.issuer == evidence.subject_issuer
	tenant := input.subject.claims[rule.claim]
	is_string(tenant)
}

# METADATA
# title: Tenant rule ids
# description: >-
#   Tenant-claim rules whose claim equals the resource's tenant, from an issuer the
#   rule trusts for that tenant.
tenant_rule_ids contains rule.id if {
	some rule in data.authz.tenant_claims
	rule.issuer == evidence.subject_issuer
	resource_tenant != ""
	input.subject.claims[rule.claim] == resource_tenant
	issuer_vouches_for(rule, resource_tenant)
}

# METADATA
# title: Issuer vouches for
# description: >-
#   A tenant-claim rule that lists tenants trusts its issuer for those only: a trusted
#   issuer of one tenant cannot claim another (subjects and entitlements are keyed by
#   sub, whatever the issuer). One without tenants trusts its issuer for any; tenants
#   that are not a list (a data error) vouch for nothing: "in" would read an object's values.
issuer_vouches_for(rule, _) if not evidence.has_key(rule, "tenants")

issuer_vouches_for(rule, tenant) if {
	is_array(rule.tenants)
	tenant in rule.tenants
}

# METADATA
# title: Subject mapping ids
# description: Mapping rules that cover the token's subject for the action.
subject_mapping_ids := evidence.mapping_rule_ids(evidence.subject_id, action_name)

# METADATA
# title: Subject entitlement ids
# description: Live entitlements of the token's subject for the action in the resource's tenant.
subject_entitlement_ids := evidence.entitlement_ids(evidence.subject_id, action_name, resource_tenant)

# METADATA
# title: Permission hints
# description: >-
#   Permission-like claims (data.authz.permission_hint_claims) found in the
#   token. They are reported, never used: permissions come from entitlements.
permission_hints[claim] := value if {
	some claim in data.authz.permission_hint_claims
	value := input.subject.claims[claim]
}

# --- Delegation -----------------------------------------------------------------

# METADATA
# title: Actors
# description: >-
#   The parties acting for the subject, current actor first: the token's OAuth client when it
#   is an agent other than the subject that the RFC 8693 delegation chain (act) does not name
#   (an agent given a user's token, e.g. by an authorization code flow, acts all the same; one
#   presenting a token whose chain names others is judged too, not hidden behind them), then
#   the chain.
actors := array.concat(unlisted_agent_client, delegation_chain)

# METADATA
# title: Unlisted agent client
# description: The acting agent client as an actor, when the delegation chain does not name it; else [].
default unlisted_agent_client := []

unlisted_agent_client := [{"client_id": acting_agent_client}] if not agent_client_in_chain

# METADATA
# title: Agent client in chain
# description: >-
#   An actor of the delegation chain is identified as the acting agent client (actor_id: its
#   sub, else its client_id), so it is judged as that actor already.
agent_client_in_chain if {
	some actor in delegation_chain
	actor_id(actor) == acting_agent_client
}

# METADATA
# title: Delegation chain
# description: >-
#   input.subject.act; [] without one. A chain that is present but not a list counts as one
#   actor nobody can identify, so it is denied rather than ignored.
default delegation_chain := []

delegation_chain := input.subject.act if is_array(input.subject.act)

else := [{}] if not is_null(object.get(input.subject, "act", null))

# METADATA
# title: Agent patterns
# description: >-
#   data.authz.delegation.agents, patterns of the sub or client_id of agents; [] when absent.
#   Given but not a list (a data error), they cannot tell agents apart: every party counts as
#   one ("**"), since counting none would let agents act unjudged and skip approvals.
default agent_patterns := []

agent_patterns := data.authz.delegation.agents if is_array(data.authz.delegation.agents)

else := ["**"] if evidence.has_key(data.authz.delegation, "agents")

# METADATA
# title: Is agent
# description: The party id (a sub or client_id) is an agent's.
is_agent(id) if evidence.matches(agent_patterns, "/", id)

# METADATA
# title: Acting agent client
# description: The token's client_id, when it names an agent other than the subject.
acting_agent_client := input.subject.client_id if {
	is_string(input.subject.client_id)
	input.subject.client_id != evidence.subject_id
	is_agent(input.subject.client_id)
}

# METADATA
# title: Maximum delegation depth
# description: data.authz.delegation.max_depth; 0 (no delegation) when the data does not say.
default max_delegation_depth := 0

max_delegation_depth := data.authz.delegation.max_depth if is_number(data.authz.delegation.max_depth)

# METADATA
# title: Actor id
# description: An actor is identified by its sub, else its client_id.
actor_id(actor) := actor.sub if is_string(actor.sub)

else := actor.client_id if is_string(actor.client_id)

else := ""

# METADATA
# title: Actor grants
# description: For each actor in the chain, the mapping rules and live entitlements that cover the action.
actor_grants[depth] := grant if {
	some index, actor in actors
	depth := index + 1
	id := actor_id(actor)
	grant := {
		"actor": id,
		"depth": depth,
		"mapping_rule_ids": evidence.mapping_rule_ids(id, action_name),
		"entitlement_ids": evidence.entitlement_ids(id, action_name, resource_tenant),
	}
}

# METADATA
# title: Missing actor evidence
# description: What an actor lacks ("mapping", "entitlement") to take part in the request.
missing_actor_evidence(grant) := {item |
	some item in ["mapping", "entitlement"]
	actor_lacks(grant, item)
}

# METADATA
# title: Actor lacks
# description: True when the actor's grant lacks the named kind of evidence.
actor_lacks(grant, "mapping") if count(grant.mapping_rule_ids) == 0

actor_lacks(grant, "entitlement") if {
	evidence.entitlements_available
	count(grant.entitlement_ids) == 0
}

# METADATA
# title: Approval needed
# description: >-
#   An agent asks for an action whose risk level requires a human approval: as an actor
#   for the subject, or as the subject itself (an agent with a token of its own). Only
#   agent_approval_required: false waives it; "true", 1 or nothing (a data error) does not.
#   An unknown risk level is denied risk_level_unknown, which no approval would lift.
approval_needed if {
	not risk_policy.agent_approval_required == false
	risk_policy
	agent_involved
}

# METADATA
# title: Agent involved
# description: An agent takes part, as an actor for the subject or as the subject (with a token of its own).
agent_involved if count(actors) > 0

agent_involved if {
	evidence.authenticated
	is_agent(evidence.subject_id)
}

# METADATA
# title: Approval id
# description: The approval reference the caller sent in input.context.approval_id.
approval_id := input.context.approval_id if is_string(input.context.approval_id)

# METADATA
# title: Current actor
# description: The id of the actor that makes the request (the first of the chain), or null without one.
current_actor := object.get(actor_grants, [1, "actor"], null)

# METADATA
# title: Accepted approval
# description: >-
#   The referenced live approval (data.approvals[id]) covers this action for this
#   subject, has not expired (expires_at in epoch seconds, not milliseconds), and,
#   for each of resource_id, actor and tenant that it names, was given for this
#   request's resource, current actor and tenant.
accepted_approval := approval if {
	evidence.approvals_available
	approval := data.approvals[approval_id]
	approval.action == action_name
	approval.subject == evidence.subject_id
	approval_binds(approval, "resource_id", object.get(input.resource, "id", null))
	approval_binds(approval, "actor", current_actor)
	approval_binds(approval, "tenant", resource_tenant)
	is_number(input.context.now)
	is_number(approval.expires_at)
	approval.expires_at > input.context.now
	approval.expires_at <= evidence.max_epoch_s # past it, milliseconds: it would never expire
}

# METADATA
# title: Approval binds
# description: >-
#   An approval that names a property (resource_id, actor, tenant) covers only
#   requests with that value; one that does not name it covers any.
approval_binds(approval, property, _) if not evidence.has_key(approval, property)

approval_binds(approval, property, value) if approval[property] == value

# --- Freshness ------------------------------------------------------------------

# METADATA
# title: Maximum token age
# description: The freshness limit of the action's risk level, when it has one.
max_token_age_s := risk_policy.max_token_age_s

# METADATA
# title: Authentication age
# description: >-
#   Seconds since the user authenticated: input.subject.token.auth_age_s when the token
#   carries OpenID Connect's auth_time (a token refreshed without signing in again keeps the
#   sign-in's age), else the token's own age (now - iat); null without a token.
default authentication_age_s := null

authentication_age_s := input.subject.token.auth_age_s if is_number(input.subject.token.auth_age_s)

else := input.subject.token.age_s

# METADATA
# title: Authentication age from
# description: Which claim the authentication age counts from, "auth_time" or "iat", for reasons.
authentication_age_from := "auth_time" if is_number(input.subject.token.auth_age_s)

else := "iat"

# METADATA
# title: Token fresh
# description: The authentication age, a number, does not exceed the risk level's limit, a number.
token_fresh if {
	is_number(max_token_age_s)
	is_number(authentication_age_s)
	authentication_age_s <= max_token_age_s
}

# METADATA
# title: Token too old
# description: >-
#   The risk level sets a limit and the token is not known to be within it. A limit that is
#   not a number (a data error) is never met: every number orders before every string in Rego,
#   so comparing with it would call any token fresh.
token_too_old if {
	evidence.authenticated
	evidence.has_key(risk_policy, "max_token_age_s")
	not token_fresh
}

# METADATA
# title: Approval id asked for
# description: input.context.approval_id as sent, or null (also when context is missing).
default requested_approval_id := null

requested_approval_id := input.context.approval_id
