# METADATA
# title: Evidence shared by the decision and issuance entrypoints
# description: >-
#   Turns verified claims and live data into evidence through the explicit,
#   id-carrying rules of data.authz. Every answer is a set of rule or
#   entitlement ids so that callers can explain both a grant and its absence.
# scope: package
package authz.evidence

# Patterns are matched with string operations, not glob.match: OPA's
# WebAssembly runtime compiles a regular expression for each glob on every
# evaluation, which cost more than all the rest of a decision.

# Delimiters, passed as literals (a constant rule costs a lookup per use):
# subjects are SPIFFE IDs, URNs or e-mail-like ids, and "/" separates their
# segments, so "*" stays inside one segment and "**" crosses segments; action
# names are dotted ("invoices.read"), so "invoices.*" covers one level.

# METADATA
# title: Authenticated
# description: True only when Arbiter verified a token; anything else is anonymous.
authenticated if input.subject.authenticated == true

# METADATA
# title: Revoked
# description: The token, its session, its client or an actor in its delegation chain is on a revocation list.
revoked if input.subject.revoked.revoked == true

# METADATA
# title: Subject id
# description: The token's sub claim, or "" so that reasons stay well-formed without one.
default subject_id := ""

subject_id := input.subject.sub if is_string(input.subject.sub)

# METADATA
# title: Subject issuer
# description: The token's iss claim, or "" when absent.
default subject_issuer := ""

subject_issuer := input.subject.iss if is_string(input.subject.iss)

# METADATA
# title: Trusted issuer rule ids
# description: Ids of the data.authz.trusted_issuers rules that trust the token's issuer.
trusted_issuer_rule_ids contains rule.id if {
	some rule in data.authz.trusted_issuers
	rule.issuer == subject_issuer
}

# METADATA
# title: Matches
# description: >-
#   True when value matches one of the patterns, a list. Patterns that are not a
#   list (a data error) match nothing: "some ... in" would read an object's values.
matches(patterns, delimiter, value) if {
	is_array(patterns)
	some pattern in patterns
	pattern_matches(split(pattern, "*"), delimiter, value)
}

# METADATA
# title: Pattern matches
# description: >-
#   True when value matches the pattern, given as its parts around "*":
#   literal text, text around one "*" (any run of characters without the
#   delimiter) or text around one "**" (any run of characters). A pattern
#   with more wildcards matches nothing.
pattern_matches([text], _, value) if text == value

pattern_matches([prefix, suffix], delimiter, value) if {
	startswith(value, prefix)
	rest := trim_prefix(value, prefix)
	endswith(rest, suffix)
	not contains(trim_suffix(rest, suffix), delimiter)
}

pattern_matches([prefix, "", suffix], _, value) if {
	startswith(value, prefix)
	endswith(trim_prefix(value, prefix), suffix)
}

# METADATA
# title: Mapping rule ids
# description: >-
#   Ids of the data.authz.subject_mappings rules whose subject patterns match
#   party_id and whose action patterns cover action.
mapping_rule_ids(party_id, action) := {rule.id |
	some rule in data.authz.subject_mappings
	matches(rule.subjects, "/", party_id)
	matches(rule.actions, ".", action)
}

# METADATA
# title: Party grants
# description: >-
#   data.entitlements[party_id].grants when it is a list; undefined otherwise.
#   Live data has no schema on the way in, so a malformed feed (grants, actions
#   or tenants that are objects) must entitle nothing: "in" and "some ... in"
#   would read an object's values, {"tenants": {"t": "acme"}} as tenant acme.
party_grants(party_id) := grants if {
	grants := data.entitlements[party_id].grants
	is_array(grants)
}

# METADATA
# title: Entitlement ids
# description: >-
#   Ids of the live entitlements (party_grants(party_id)) that are active now
#   and cover action in tenant: one of their actions patterns matches it and
#   their tenants list holds tenant.
entitlement_ids(party_id, action, tenant) := {grant.id |
	some grant in party_grants(party_id)
	tenant != ""
	is_array(grant.tenants)
	tenant in grant.tenants
	matches(grant.actions, ".", action)
	active(grant, input.context.now)
}

# METADATA
# title: Active
# description: >-
#   An entitlement without expires_at is active; one with it is active until
#   now (input.context.now) reaches it; without a clock it is not active, nor
#   with an expires_at past the last second of year 9999 (a time in
#   milliseconds, which now would never reach).
active(grant, _) if not has_key(grant, "expires_at")

active(grant, now) if {
	is_number(grant.expires_at)
	is_number(now)
	grant.expires_at > now
	grant.expires_at <= max_epoch_s
}

# METADATA
# title: Latest epoch second
# description: >-
#   The last second a date can show (9999-12-31T23:59:59Z), as
#   src/data/epoch-seconds.ts: a larger expires_at is a time in milliseconds.
max_epoch_s := 253402300799

# METADATA
# title: Has key
# description: >-
#   The object has the key, whatever its value (false and null included). A
#   direct lookup: "k in object.keys(o)" builds and hashes a set of every key
#   on each call, which cost ~1 µs per decision of the default policy.
has_key(doc, key) if {
	is_object(doc)
	_ = doc[key]
}

# METADATA
# title: Entitlements loaded
# description: data.entitlements is present and Arbiter reports its freshness.
entitlements_loaded if {
	is_object(data.entitlements)
	is_object(input.data_status.entitlements)
}

# METADATA
# title: Entitlements available
# description: Loaded and explicitly not stale; anything else fails closed.
entitlements_available if {
	entitlements_loaded
	input.data_status.entitlements.stale == false
}

# METADATA
# title: Approvals available
# description: data.approvals is present, reported and explicitly not stale.
approvals_available if {
	is_object(data.approvals)
	input.data_status.approvals.stale == false
}
