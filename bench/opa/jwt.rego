# METADATA
# title: Benchmark wrapper for the OPA side of the JWT workload
# description: >-
#   Does in Rego what Arbiter does in front of the policy: verifies the token
#   with io.jwt.decode_verify against the same JWKS (data.bench.jwks, a JSON
#   string), applies the issuer's age and lifetime limits, builds input.subject
#   the way Arbiter does (src/tokens/subject.ts) and asks data.authz.decision.
# scope: package
package bench

issuer := "https://idp.acme.example"

audience := "https://api.example.com"

# Arbiter's issuer config in the benchmark: max_token_age_s and max_lifetime_s.
max_token_age_s := 14400

max_lifetime_s := 86400

now_ns := time.now_ns()

now := floor(now_ns / 1000000000)

verified := [header, payload] if {
	[valid, header, payload] := io.jwt.decode_verify(input.token, {
		"cert": data.bench.jwks,
		"alg": "ES256",
		"iss": issuer,
		"aud": audience,
		"time": now_ns,
	})
	valid
	is_string(payload.sub)
	is_number(payload.iat)
	now - payload.iat <= max_token_age_s
	payload.exp - payload.iat <= max_lifetime_s
}

audiences := [payload.aud] if {
	[_, payload] := verified
	is_string(payload.aud)
} else := verified[1].aud

default subject := {"authenticated": false, "aud": [], "scopes": [], "act": [], "claims": {}, "revoked": {"revoked": false}}

subject := {
	"authenticated": true,
	"iss": payload.iss,
	"sub": payload.sub,
	"aud": audiences,
	"scopes": [scope | some scope in split(payload.scope, " "); scope != ""],
	"client_id": payload.client_id,
	"act": [],
	"claims": payload,
	"token": {
		"alg": header.alg,
		"kid": header.kid,
		"typ": header.typ,
		"iat": payload.iat,
		"exp": payload.exp,
		"jti": payload.jti,
		"age_s": now - payload.iat,
		"ttl_s": payload.exp - now,
		"fingerprint": crypto.sha256(input.token),
	},
	"revoked": {"revoked": false},
} if {
	[header, payload] := verified
}

context := object.union(object.get(input, "context", {}), {"now": now})

# Live data freshness as Arbiter reports it for a seeded document.
data_status := {"entitlements": {"source": "bench", "stale": false}}

decision := result if {
	result := data.authz.decision with input.subject as subject
		with input.context as context
		with input.data_status as data_status
}
