# METADATA
# title: Tests of the pattern language
# description: >-
#   Patterns are literal text with at most one "*" or "**". Within that
#   language they match exactly what glob.match matches; outside it they fail
#   closed.
package authz.evidence_test

import data.authz.evidence

# Each case: pattern, delimiter, value.
supported_cases := [
	["invoices.read", ".", "invoices.read"],
	["invoices.read", ".", "invoices.list"],
	["invoices.read", ".", "invoices.read.all"],
	["invoices.*", ".", "invoices.read"],
	["invoices.*", ".", "invoices."],
	["invoices.*", ".", "invoices"],
	["invoices.*", ".", "invoices.read.all"],
	["invoices.*", ".", "payments.read"],
	["*.read", ".", "invoices.read"],
	["*.read", ".", "a.b.read"],
	["*", ".", "invoices"],
	["*", ".", "invoices.read"],
	["*", ".", ""],
	["user:*@acme.example", "/", "user:alice@acme.example"],
	["user:*@acme.example", "/", "user:@acme.example"],
	["user:*@acme.example", "/", "user:a/b@acme.example"],
	["user:*@acme.example", "/", "user:alice@acme.example.evil"],
	["user:*@acme.example", "/", "user@acme.example"],
	["ab*ba", "/", "aba"],
	["ab*ba", "/", "abba"],
	["spiffe://acme.example/ns/billing/sa/*", "/", "spiffe://acme.example/ns/billing/sa/invoice-worker"],
	["spiffe://acme.example/ns/billing/sa/*", "/", "spiffe://acme.example/ns/billing/sa/a/b"],
	["spiffe://acme.example/ns/billing/sa/*", "/", "spiffe://acme.example/ns/billing/sa"],
	["spiffe://acme.example/**", "/", "spiffe://acme.example/ns/billing/sa/a"],
	["spiffe://acme.example/**", "/", "spiffe://acme.example/"],
	["spiffe://acme.example/**", "/", "spiffe://evil.example/ns"],
	["**/sa/token-service", "/", "spiffe://acme.example/ns/identity/sa/token-service"],
	["**/sa/token-service", "/", "spiffe://acme.example/ns/identity/sa/other"],
	["**", "/", "any/client"],
	["**", "/", ""],
	["", "/", ""],
	["", "/", "x"],
]

test_supported_forms_agree_with_glob_match if {
	matched := {case |
		some case in supported_cases
		[pattern, delimiter, value] := case
		evidence.matches([pattern], delimiter, value)
	}
	globbed := {case |
		some case in supported_cases
		[pattern, delimiter, value] := case
		glob.match(pattern, [delimiter], value)
	}
	matched == globbed
}

test_supported_cases_cover_matches_and_misses if {
	{glob.match(pattern, [delimiter], value) | some [pattern, delimiter, value] in supported_cases} == {true, false}
}

test_one_matching_pattern_is_enough if {
	evidence.matches(["payments.*", "invoices.read"], ".", "invoices.read")
}

test_no_pattern_matches_nothing if {
	not evidence.matches([], ".", "invoices.read")
}

test_more_than_one_wildcard_matches_nothing if {
	not evidence.matches(["*.*"], ".", "invoices.read")
	not evidence.matches(["spiffe://*/ns/*"], "/", "spiffe://acme.example/ns/billing")
	not evidence.matches(["invoices.***"], ".", "invoices.read")
}

test_other_glob_syntax_is_literal if {
	not evidence.matches(["invoices.re?d"], ".", "invoices.read")
	not evidence.matches(["invoices.{read,list}"], ".", "invoices.read")
	evidence.matches(["invoices.[ab]"], ".", "invoices.[ab]")
}

# has_key replaced "key in object.keys(doc)": it must agree with it on every kind of value.
test_has_key_agrees_with_object_keys if {
	docs := [{}, {"k": false}, {"k": null}, {"k": 0}, {"k": ""}, {"k": []}, {"k": {}}, {"other": true}, {"k": true, "other": 1}]
	with_key := {i | some i, doc in docs; evidence.has_key(doc, "k")}
	with_key == {i | some i, doc in docs; "k" in object.keys(doc)}
	count(with_key) == 7
}

test_has_key_is_false_for_non_objects if {
	not evidence.has_key(["k"], "k")
	not evidence.has_key({"k"}, "k")
	not evidence.has_key("k", "k")
	not evidence.has_key(null, "k")
}
