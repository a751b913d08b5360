# METADATA
# title: AuthZEN Todo interop scenario
# description: |
#   Rules of the OpenID AuthZEN "Todo" interoperability scenario: who may read
#   users and to-dos, and create, update or delete to-dos. See README.md.
# scope: package
package todo

# The scenario's subject ids are opaque: Dex-style identifiers, the standard
# base64 encoding of a protobuf message {1: user id, 2: connector id}. Both
# fields are short ASCII strings, so each length fits a one-byte varint and
# every byte is one character of a Rego string.
connector := "local"

# METADATA
# description: |
#   The user id inside an opaque subject id. Undefined unless the id is exactly
#   the canonical encoding of some user id: decoding alone would accept
#   non-canonical base64, other connectors and wrong length prefixes.
user_id_from_subject_id(subject_id) := user_id if {
	decoded := base64.decode(subject_id)

	# Only ASCII can be the encoding of a user id, and substring() aborts the
	# WebAssembly evaluation on bytes that are not UTF-8: rule them out first.
	regex.match(`^[\x00-\x7f]*$`, decoded)
	user_id := substring(decoded, 2, (count(decoded) - count(connector)) - 4)
	subject_id_for_user(user_id) == subject_id
}

# METADATA
# description: The opaque subject id of a user id (the inverse of user_id_from_subject_id).
subject_id_for_user(user_id) := base64.encode(concat("", [
	"\n", length_prefix(user_id), user_id,
	"\u0012", length_prefix(connector), connector,
]))

# Rego has no chr(): a JSON \u escape turns the length into its one-byte varint.
length_prefix(s) := json.unmarshal(concat("", [`"\u00`, two_hex_digits(count(s)), `"`])) if count(s) < 128

two_hex_digits(n) := format_int(n, 16) if n >= 16

two_hex_digits(n) := concat("", ["0", format_int(n, 16)]) if n < 16
