package authz

import data.authz.evidence

# Governed issuance: a token service asks before it mints a token. Scopes are
# minimised by default: a requested scope is granted only when the client and
# the subject (if any) each hold a mapping rule and a live entitlement for one
# same action that the scope envelops, in one same tenant. Anything beyond that needs an explicit exception rule in
# data.authz.issuance_rules.exceptions, with an id and a reason.

# METADATA
# title: Issuance decision
# description: >-
#   Entrypoint answering a token service: which requested scopes may be granted
#   now, which are refused and why, and the longest lifetime the token may have.
#   allow is true when at least one scope is granted.
# entrypoint: true
default issuance := {
	"allow": false,
	"reasons": [{"code": "policy_error", "message": "the policy could not compute an issuance decision"}],
	"obligations": [],
	"granted_scopes": [],
	"refused_scopes": [],
	"max_ttl_s": 0,
}

issuance := {
	"allow": count(granted_scopes) > 0,
	"reasons": sort(issuance_reasons),
	"obligations": [],
	"granted_scopes": sort(granted_scopes),
	"refused_scopes": sort({{"scope": refusal.scope, "code": refusal.code, "message": refusal.message} |
		some refusal in scope_refusals
	}),
	"max_ttl_s": issuance_max_ttl_s,
}

# --- The request ----------------------------------------------------------------

# METADATA
# title: Issuance client
# description: input.issuance.client_id, or "" when absent (which refuses everything).
default issuance_client := ""

issuance_client := input.issuance.client_id if is_string(input.issuance.client_id)

# METADATA
# title: Requested scopes
# description: The distinct scopes the token service asks for.
requested_scopes contains scope if {
	some scope in input.issuance.scopes
	is_string(scope)
}

# METADATA
# title: Issuance parties
# description: >-
#   Who must be entitled to a scope: the client, and the subject when the token
#   is minted for one (the client then acts for the subject).
issuance_parties contains {"party": "client", "id": issuance_client}

issuance_parties contains {"party": "subject", "id": input.issuance.subject} if {
	is_string(input.issuance.subject)
	input.issuance.subject != ""
}

# --- Scopes ---------------------------------------------------------------------

# METADATA
# title: Scope actions
# description: The actions of data.authz.actions whose scope is scope.
scope_actions(scope) := {action |
	some action, spec in data.authz.actions
	spec.scope == scope
}

# METADATA
# title: Known scopes
# description: Scopes that envelop an action or that an exception rule names.
known_scopes contains spec.scope if some spec in data.authz.actions

known_scopes contains scope if {
	some rule in data.authz.issuance_rules.exceptions
	some scope in rule.scopes
}

# METADATA
# title: Exception rules
# description: Exception rules that grant scope to this client for this purpose.
exception_rules(scope) := {rule |
	some rule in data.authz.issuance_rules.exceptions
	exception_well_formed(rule)
	scope in rule.scopes
	evidence.matches(rule.clients, "/", issuance_client)
	exception_purpose_fits(rule, object.get(input.issuance, "purpose", ""))
}

# METADATA
# title: Exception well formed
# description: >-
#   The rule is explicit and explained (an id and a reason, non-empty strings, which
#   the scope_exception reason repeats: without them a grant would say nothing of
#   why) and its scopes and purposes, when given, are lists ("in" would read an
#   object's values). Any other rule applies to nothing.
exception_well_formed(rule) if {
	non_empty_string(rule.id)
	non_empty_string(rule.reason)
	is_array(rule.scopes)
	list_if_given(rule, "purposes")
}

# METADATA
# title: Non-empty string
# description: A string with at least one character.
non_empty_string(value) if {
	is_string(value)
	value != ""
}

# METADATA
# title: List if given
# description: The rule has no such key, or its value is a list.
list_if_given(rule, key) if not evidence.has_key(rule, key)

list_if_given(rule, key) if is_array(rule[key])

# METADATA
# title: Exception purpose fits
# description: An exception without purposes fits any request; one with purposes needs one of them.
exception_purpose_fits(rule, _) if not evidence.has_key(rule, "purposes")

exception_purpose_fits(rule, purpose) if purpose in rule.purposes

# METADATA
# title: Scope mapping ids
# description: Mapping rules that cover party_id for some action of scope.
scope_mapping_ids(party_id, scope) := {rule_id |
	some action in scope_actions(scope)
	some rule_id in evidence.mapping_rule_ids(party_id, action)
}

# METADATA
# title: Scope mapped actions
# description: The actions of scope that a mapping rule covers for party_id.
scope_mapped_actions(party_id, scope) := {action |
	some action in scope_actions(scope)
	count(evidence.mapping_rule_ids(party_id, action)) > 0
}

# METADATA
# title: Scope entitlement ids
# description: >-
#   Live entitlements of party_id, in any of their tenants, for an action of scope
#   that a mapping rule also covers for party_id: a mapping of one action and an
#   entitlement of another add up to nothing. A grant that names no tenant
#   entitles nothing in authz/decision, so it backs no scope here either. What
#   the party holds on its own (no_entitlement); scope_backing asks whether the
#   parties hold it together.
scope_entitlement_ids(party_id, scope) := {grant.id |
	some grant in evidence.party_grants(party_id)
	names_a_tenant(grant)
	evidence.active(grant, input.context.now)
	some action in scope_mapped_actions(party_id, scope)
	evidence.matches(grant.actions, ".", action)
}

# METADATA
# title: Names a tenant
# description: >-
#   The grant's tenants, a list, hold a tenant name (a non-empty string), the
#   only kind authz/decision can match against a resource's tenant.
names_a_tenant(grant) if {
	is_array(grant.tenants)
	some tenant in grant.tenants
	is_string(tenant)
	tenant != ""
}

# METADATA
# title: Action tenants
# description: >-
#   The tenants (non-empty strings of an entitlement's tenants list) in which
#   party_id holds a live entitlement for action.
action_tenants(party_id, action) := {tenant |
	some grant in evidence.party_grants(party_id)
	is_array(grant.tenants)
	evidence.active(grant, input.context.now)
	evidence.matches(grant.actions, ".", action)
	some tenant in grant.tenants
	is_string(tenant)
	tenant != ""
}

# METADATA
# title: Issuance backing
# description: >-
#   For each requested scope, its actions that a mapping rule covers for every
#   party, each with the tenants in which every party holds a live entitlement
#   for it (never empty). The client acts for the subject: authz/decision needs
#   the subject and an acting agent each mapped and entitled to the request's one
#   action in the resource's one tenant, so entitlements of different actions or
#   tenants add up to nothing here either. A rule, not a function: computed once
#   per decision, however often it is read.
issuance_backing[scope] := {action: tenants |
	some action in scope_actions(scope)
	mapped_for_every_party(action)
	tenants := shared_tenants(action)
	count(tenants) > 0
} if {
	some scope in requested_scopes
}

# METADATA
# title: Mapped for every party
# description: >-
#   A mapping rule covers action for every issuance party. A function of its
#   own rather than inline: opa build -O=1 refuses an `every` inside the
#   comprehension above as unsafe.
mapped_for_every_party(action) if {
	every party in issuance_parties {
		count(evidence.mapping_rule_ids(party.id, action)) > 0
	}
}

# METADATA
# title: Shared tenants
# description: The tenants in which every issuance party holds a live entitlement for action.
shared_tenants(action) := intersection({action_tenants(party.id, action) | some party in issuance_parties})

# METADATA
# title: Scope backing
# description: The actions of the requested scope every party may take, each with the tenants they share.
scope_backing(scope) := issuance_backing[scope]

# METADATA
# title: Scope backed by entitlements
# description: Every party holds a mapping rule and a live entitlement for one same action of the scope, in one same tenant.
scope_backed_by_entitlements(scope) if {
	count(scope_actions(scope)) > 0
	evidence.entitlements_available
	count(scope_backing(scope)) > 0
}

# METADATA
# title: Backing mapping ids
# description: Mapping rules that cover party_id for an action of the scope's backing.
backing_mapping_ids(party_id, scope) := {rule_id |
	some action, _ in scope_backing(scope)
	some rule_id in evidence.mapping_rule_ids(party_id, action)
}

# METADATA
# title: Backing entitlement ids
# description: Live entitlements of party_id that cover an action of the scope's backing in one of its shared tenants.
backing_entitlement_ids(party_id, scope) := {grant.id |
	backing := scope_backing(scope)
	some grant in evidence.party_grants(party_id)
	is_array(grant.tenants)
	evidence.active(grant, input.context.now)
	some action, tenants in backing
	evidence.matches(grant.actions, ".", action)
	some tenant in grant.tenants
	tenant in tenants
}

# METADATA
# title: Granted scopes
# description: Requested scopes backed by entitlements or by an exception rule, when the request itself passed.
granted_scopes contains scope if {
	count(issuance_denials) == 0
	some scope in requested_scopes
	not max_ttl_unknown(scope)
	not scope_beyond_caller_limits(scope)
	scope_backed_by_entitlements(scope)
}

granted_scopes contains scope if {
	count(issuance_denials) == 0
	some scope in requested_scopes
	not max_ttl_unknown(scope)
	not scope_beyond_caller_limits(scope)
	count(exception_rules(scope)) > 0
}

# --- Lifetime -------------------------------------------------------------------

# METADATA
# title: Lifetime limits
# description: >-
#   The default limit, the max_ttl_s of the risk level of every action a granted
#   scope envelops, and the max_ttl_s of every exception rule that was applied.
ttl_limits contains limit if {
	limit := data.authz.issuance_rules.default_max_ttl_s
}

ttl_limits contains limit if {
	some scope in granted_scopes
	some action in scope_actions(scope)
	limit := data.authz.risk_levels[data.authz.actions[action].risk].max_ttl_s
}

ttl_limits contains rule.max_ttl_s if {
	some scope in granted_scopes
	some rule in exception_rules(scope)
}

# METADATA
# title: Lifetime limit unknown
# description: >-
#   A limit that would apply to the scope cannot be read. ttl_limits would leave it
#   out, granting the scope for default_max_ttl_s: longer than its risk level allows.
max_ttl_unknown(scope) if {
	some refusal in max_ttl_refusals
	refusal.scope == scope
}

# METADATA
# title: Lifetime refusals
# description: >-
#   Requested scopes with an action whose risk level is not in
#   data.authz.risk_levels or has no whole max_ttl_s of at least 1 (authz/decision
#   denies that action risk_level_unknown), with an applied exception rule whose
#   max_ttl_s, given, is not one, or to which no limit applies at all (no action,
#   no exception max_ttl_s, no default): min() of no limits would leave an allow
#   without a lifetime, which the issuance contract refuses as a whole.
max_ttl_refusals contains {
	"scope": scope,
	"code": "max_ttl_unknown",
	"action": action,
	"risk": object.get(data.authz.actions[action], "risk", null),
	"message": "an action of the scope has no risk level in data.authz.risk_levels with a whole max_ttl_s of at least 1, so the token's lifetime cannot be bounded",
} if {
	some scope in requested_scopes
	some action in scope_actions(scope)
	not action_max_ttl_usable(action)
}

max_ttl_refusals contains {
	"scope": scope,
	"code": "max_ttl_unknown",
	"rule_id": object.get(rule, "id", null),
	"message": "the exception rule's max_ttl_s, when given, must be a whole number of at least 1",
} if {
	some scope in requested_scopes
	some rule in exception_rules(scope)
	evidence.has_key(rule, "max_ttl_s")
	not usable_max_ttl(rule.max_ttl_s)
}

max_ttl_refusals contains {
	"scope": scope,
	"code": "max_ttl_unknown",
	"message": "no lifetime limit applies to the scope: it envelops no action, its exception rules give no max_ttl_s and data.authz.issuance_rules has no default_max_ttl_s",
} if {
	not evidence.has_key(data.authz.issuance_rules, "default_max_ttl_s")
	some scope in requested_scopes
	count(scope_actions(scope)) == 0
	rules := exception_rules(scope)
	count(rules) > 0
	every rule in rules {
		not evidence.has_key(rule, "max_ttl_s")
	}
}

# METADATA
# title: Action lifetime limit usable
# description: >-
#   The risk level of the action gives a usable max_ttl_s. A rule of its own: in
#   "not usable_max_ttl(<ref>)" a ref that is undefined (an unknown risk level)
#   would make the whole body undefined, not the negation true.
action_max_ttl_usable(action) if usable_max_ttl(data.authz.risk_levels[data.authz.actions[action].risk].max_ttl_s)

# METADATA
# title: Usable lifetime limit
# description: >-
#   A whole number of seconds, at least 1: max_ttl_s is an integer in the
#   issuance contract, so a fractional limit reaching it would deny the whole
#   request policy_contract_violation instead of refusing what it limits.
usable_max_ttl(limit) if {
	is_number(limit)
	limit >= 1
	floor(limit) == limit
}

# METADATA
# title: Maximum lifetime
# description: The smallest limit that applies to the granted scopes; 0 when nothing is granted.
default issuance_max_ttl_s := 0

issuance_max_ttl_s := min(ttl_limits) if count(granted_scopes) > 0

# --- Checks ---------------------------------------------------------------------

# METADATA
# title: Issuance denials
# description: Failed checks of the request as a whole; any of them refuses every scope.
issuance_denials contains reason if some reason in token_denials

issuance_denials contains reason if some reason in entitlement_data_denials

issuance_denials contains {
	"code": "caller_not_permitted",
	"caller": evidence.subject_id,
	"issuer": evidence.subject_issuer,
	"message": "no issuance_rules.callers rule lets this caller (its issuer and sub) ask for issuance decisions",
} if {
	evidence.authenticated
	not caller_permitted
}

issuance_denials contains {
	"code": "caller_not_permitted",
	"caller": actor_id(actor),
	"issuer": actor_issuer(actor),
	"actor_depth": index + 1,
	"message": "an actor in the caller's delegation chain (act) matches no issuance_rules.callers rule (its issuer and id)",
} if {
	evidence.authenticated
	some index, actor in actors
	not actor_may_call(actor)
}

# METADATA
# title: Actor may call
# description: The actor is identified (a sub or client_id) and a callers rule covers it under its issuer.
actor_may_call(actor) if {
	actor_id(actor) != ""
	may_call(actor_issuer(actor), actor_id(actor))
}

# METADATA
# title: Actor issuer
# description: >-
#   The issuer an actor's id belongs to: the act claim's iss when it gives one
#   (RFC 8693), else the token's, whose issuer vouches for the actor (as Arbiter
#   scopes the revocations of actors).
actor_issuer(actor) := actor.iss if {
	is_string(actor.iss)
	actor.iss != ""
} else := evidence.subject_issuer

issuance_denials contains {
	"code": "client_missing",
	"message": "the issuance request names no client (input.issuance.client_id)",
} if {
	issuance_client == ""
}

issuance_denials contains object.union(
	{
		"code": "party_revoked",
		"party": party,
		"message": "the client or subject of the token to mint has been revoked",
	},
	object.filter(input.issuance.revoked[party], ["reason", "revocation_id"]),
) if {
	some party in ["client", "subject"]
	input.issuance.revoked[party].revoked == true
}

issuance_denials contains {
	"code": "party_revocation_unknown",
	"party": party.party,
	"message": "whether this party is revoked is not known (input.issuance.revoked), so nothing is granted",
} if {
	some party in issuance_parties
	not party_revocation_known(party.party)
}

# METADATA
# title: Party revocation known
# description: Arbiter said whether the party (client, subject) is revoked, as a boolean.
party_revocation_known(party) if is_boolean(input.issuance.revoked[party].revoked)

issuance_denials contains {
	"code": "delegation_too_deep",
	"depth": 1,
	"max_depth": max_delegation_depth,
	"message": "the client is an agent acting for the subject, and data.authz.delegation.max_depth allows no delegation",
} if {
	issuance_delegates
	max_delegation_depth < 1
}

# METADATA
# title: Issuance delegates
# description: >-
#   The client is an agent (data.authz.delegation.agents) minting for a subject other
#   than itself: the token's current actor, as authz/decision judges the token's client.
issuance_delegates if {
	is_string(input.issuance.subject)
	input.issuance.subject != ""
	input.issuance.subject != issuance_client
	is_agent(issuance_client)
}

issuance_denials contains {
	"code": "subject_invalid",
	"message": "input.issuance.subject, when given, must be a non-empty string",
} if {
	evidence.has_key(input.issuance, "subject")
	not is_string(input.issuance.subject)
}

issuance_denials contains {
	"code": "subject_invalid",
	"message": "input.issuance.subject, when given, must be a non-empty string",
} if {
	input.issuance.subject == ""
}

issuance_denials contains {
	"code": "audience_unknown",
	"audience": object.get(input, ["issuance", "audience"], null),
	"message": "the audience is not in data.authz.audiences",
} if {
	not audience_known
}

issuance_denials contains {
	"code": "max_ttl_unknown",
	"message": "data.authz.issuance_rules.default_max_ttl_s, when given, must be a whole number of at least 1",
} if {
	evidence.has_key(data.authz.issuance_rules, "default_max_ttl_s")
	not usable_max_ttl(data.authz.issuance_rules.default_max_ttl_s)
}

issuance_denials contains {
	"code": "no_scope_requested",
	"message": "the issuance request asks for no scope",
} if {
	count(requested_scopes) == 0
}

# METADATA
# title: Caller permitted
# description: The authenticated caller, by its issuer and sub, matches a data.authz.issuance_rules.callers rule.
caller_permitted if may_call(evidence.subject_issuer, evidence.subject_id)

# METADATA
# title: May call
# description: >-
#   A data.authz.issuance_rules.callers rule covers the party (the caller or an
#   actor of its chain): its issuers list names the party's issuer exactly and
#   one of its subjects patterns matches the party's id. A sub identifies a
#   party only within its issuer, so a rule without issuers matches nobody
#   rather than any trusted issuer's party of that sub.
may_call(issuer, party_id) if {
	some rule in data.authz.issuance_rules.callers
	is_array(rule.issuers)
	issuer in rule.issuers
	evidence.matches(rule.subjects, "/", party_id)
}

# --- Caller limits --------------------------------------------------------------

# A callers rule may limit what its callers ask for: clients (patterns of the client_id, "/"
# delimited), audiences (patterns of the audience, "/" delimited) and scopes (patterns of each
# requested scope, "." delimited as actions are). Absent: unrestricted. Each rule is one
# permission, whole: a client one rule allows and an audience another allows add up to nothing.

# METADATA
# title: Calling parties
# description: >-
#   The authenticated caller and each actor of its delegation chain, as caller_not_permitted
#   names them: every one of them must be permitted, so each is held to its own rules' limits.
calling_parties contains {"caller": evidence.subject_id, "issuer": evidence.subject_issuer} if evidence.authenticated

calling_parties contains {"caller": actor_id(actor), "issuer": actor_issuer(actor), "actor_depth": index + 1} if {
	evidence.authenticated
	some index, actor in actors
}

# METADATA
# title: Caller rules
# description: The data.authz.issuance_rules.callers rules that cover the party (as may_call matches them).
caller_rules(party) := {rule |
	some rule in data.authz.issuance_rules.callers
	is_array(rule.issuers)
	party.issuer in rule.issuers
	evidence.matches(rule.subjects, "/", party.caller)
}

# METADATA
# title: Within limit
# description: >-
#   The rule does not limit key, or one of its patterns (a list) matches value. A limit that
#   is given but not a list matches nothing (evidence.matches): it fails closed rather than
#   read as no limit.
within_limit(rule, key, _, _) if not evidence.has_key(rule, key)

within_limit(rule, key, delimiter, value) if evidence.matches(rule[key], delimiter, value)

# METADATA
# title: Issuance audience
# description: input.issuance.audience, or "" when it is not a string (audience_unknown denies it).
default issuance_audience := ""

issuance_audience := input.issuance.audience if is_string(input.issuance.audience)

# METADATA
# title: Client rules
# description: The party's callers rules whose clients limit allows the requested client.
client_rules(party) := {rule |
	some rule in caller_rules(party)
	within_limit(rule, "clients", "/", issuance_client)
}

# METADATA
# title: Request rules
# description: The party's callers rules whose clients and audiences limits allow the request.
request_rules(party) := {rule |
	some rule in client_rules(party)
	within_limit(rule, "audiences", "/", issuance_audience)
}

# METADATA
# title: Scope within caller limits
# description: One of the party's rules that allow the client and audience also allows the scope.
scope_within_caller_limits(party, scope) if {
	some rule in request_rules(party)
	within_limit(rule, "scopes", ".", scope)
}

# METADATA
# title: Scope beyond caller limits
# description: A calling party may not ask for the scope.
scope_beyond_caller_limits(scope) if {
	some party in calling_parties
	not scope_within_caller_limits(party, scope)
}

issuance_denials contains object.union(party, {
	"code": "caller_not_permitted",
	"limit": "clients",
	"client_id": issuance_client,
	"message": "no issuance_rules.callers rule that covers this caller lets it ask for this client (its clients patterns)",
}) if {
	some party in calling_parties
	count(caller_rules(party)) > 0
	count(client_rules(party)) == 0
}

issuance_denials contains object.union(party, {
	"code": "caller_not_permitted",
	"limit": "audiences",
	"audience": object.get(input, ["issuance", "audience"], null),
	"message": "no issuance_rules.callers rule that covers this caller and lets it ask for this client lets it ask for this audience (its audiences patterns)",
}) if {
	some party in calling_parties
	count(client_rules(party)) > 0
	count(request_rules(party)) == 0
}

scope_refusals contains object.union(party, {
	"scope": scope,
	"code": "caller_not_permitted",
	"limit": "scopes",
	"message": "no issuance_rules.callers rule that covers this caller and lets it ask for this client and audience lets it ask for this scope (its scopes patterns)",
}) if {
	some party in calling_parties
	count(request_rules(party)) > 0
	some scope in requested_scopes
	not scope_within_caller_limits(party, scope)
}

# METADATA
# title: Audience known
# description: The requested audience is one of data.authz.audiences.
audience_known if {
	some rule in data.authz.audiences
	rule.audience == input.issuance.audience
}

# METADATA
# title: Scope refusals
# description: Why each refused scope was refused, naming the party that lacks evidence.
scope_refusals contains {
	"scope": scope,
	"code": "request_denied",
	"message": "the issuance request itself was denied; see reasons",
} if {
	count(issuance_denials) > 0
	some scope in requested_scopes
}

scope_refusals contains refusal if some refusal in max_ttl_refusals

scope_refusals contains {
	"scope": scope,
	"code": "scope_unknown",
	"message": "no action and no exception rule uses this scope",
} if {
	some scope in requested_scopes
	not scope in known_scopes
}

scope_refusals contains {
	"scope": scope,
	"code": "no_mapping",
	"party": party.party,
	"subject": party.id,
	"message": "no subject_mappings rule covers this party for any action of the scope",
} if {
	some scope in requested_scopes
	count(scope_actions(scope)) > 0
	count(exception_rules(scope)) == 0
	some party in issuance_parties
	count(scope_mapping_ids(party.id, scope)) == 0
}

scope_refusals contains {
	"scope": scope,
	"code": "no_exception",
	"message": "the scope envelops no action, so only an exception rule grants it, and none applies to this client and purpose",
} if {
	some scope in requested_scopes
	scope in known_scopes
	count(scope_actions(scope)) == 0
	count(exception_rules(scope)) == 0
}

scope_refusals contains {
	"scope": scope,
	"code": "no_entitlement",
	"party": party.party,
	"subject": party.id,
	"message": "scopes are minimised: this party holds no live entitlement for an action of the scope it is mapped to",
} if {
	evidence.entitlements_available
	some scope in requested_scopes
	count(scope_actions(scope)) > 0
	count(exception_rules(scope)) == 0
	some party in issuance_parties
	count(scope_entitlement_ids(party.id, scope)) == 0
}

scope_refusals contains {
	"scope": scope,
	"code": "no_shared_entitlement",
	"message": "the client and the subject hold no live entitlement for one same action of the scope in one same tenant",
} if {
	evidence.entitlements_available
	some scope in requested_scopes
	scope in known_scopes
	count(exception_rules(scope)) == 0
	every party in issuance_parties {
		count(scope_entitlement_ids(party.id, scope)) > 0
	}
	count(scope_backing(scope)) == 0
}

# METADATA
# title: Issuance reasons
# description: >-
#   Failed request checks, then per scope either the evidence that granted it
#   (mapping rules and entitlements of each party, or the exception rule and
#   its reason) or the refusal.
issuance_reasons contains reason if some reason in issuance_denials

issuance_reasons contains refusal if {
	some refusal in scope_refusals
	refusal.code != "request_denied"
}

issuance_reasons contains {
	"code": "scope_granted",
	"scope": scope,
	"party": party.party,
	"subject": party.id,
	"mapping_rule_ids": sort(backing_mapping_ids(party.id, scope)),
	"entitlement_ids": sort(backing_entitlement_ids(party.id, scope)),
} if {
	some scope in granted_scopes
	scope_backed_by_entitlements(scope)
	some party in issuance_parties
}

issuance_reasons contains {
	"code": "scope_exception",
	"scope": scope,
	"rule_id": rule.id,
	"reason": rule.reason,
} if {
	some scope in granted_scopes
	some rule in exception_rules(scope)
}

issuance_reasons contains {"code": "ttl_limited", "max_ttl_s": issuance_max_ttl_s} if {
	count(granted_scopes) > 0
}
