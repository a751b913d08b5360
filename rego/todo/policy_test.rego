# METADATA
# title: Todo policy details
# description: |
#   What the interop decisions do not pin down: reason codes, the opaque
#   subject id format, inputs that must be denied, and the search candidates.
package todo.policy_test

import data.todo

rick_user_id := "fd0614d3-c39a-4781-b7bd-8b96f5a5100d"

rick := "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

morty := "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

beth := "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

request(subject_id, action_name, resource) := {
	"subject": {
		"authenticated": false, "asserted": true, "type": "user", "id": subject_id,
		"properties": {}, "scopes": [], "aud": [], "act": [], "claims": {},
	},
	"action": {"name": action_name, "properties": {}},
	"resource": object.union({"properties": {}}, resource),
	"context": {"now": 1767225600, "request_id": "policy-test"},
}

todo_owned_by(email) := {"type": "todo", "id": "t1", "properties": {"ownerID": email}}

# --- opaque subject ids

test_subject_id_decodes_to_user_id if {
	todo.user_id_from_subject_id(rick) == rick_user_id
}

test_subject_id_encodes_user_id if {
	todo.subject_id_for_user(rick_user_id) == rick
}

test_subject_id_round_trips_short_user_ids if {
	todo.user_id_from_subject_id(todo.subject_id_for_user("u7")) == "u7"
}

test_subject_id_rejects_user_ids_longer_than_one_byte_varint if {
	not todo.subject_id_for_user(concat("", [x | some _ in numbers.range(1, 128); x := "a"]))
}

test_subject_id_rejects_malformed_ids if {
	every subject_id in [
		rick_user_id, # the user id itself, not encoded
		"", "!!not base64!!", "/w==", "CiT//sM=", # invalid base64, empty, non-ASCII bytes
		base64.encode(concat("", ["\n$", rick_user_id, "\u0012\u0004ldap"])), # another connector
		base64.encode(concat("", ["\n#", rick_user_id, "\u0012\u0005local"])), # wrong length prefix
		base64.encode(concat("", ["\n$", rick_user_id, "\u0012\u0005local", "!"])), # trailing bytes
	] {
		not todo.user_id_from_subject_id(subject_id)
	}
}

# --- decisions and their reasons

test_decision_is_a_full_object_on_empty_input if {
	todo.decision == {"allow": false, "reasons": [{
		"code": "subject_type_unsupported",
		"message": "subjects must have type \"user\"",
	}]} with input as {}
}

test_subject_type_other_than_user_is_denied if {
	r := request(rick, "can_read_todos", {"type": "todo", "id": "t1"})
	d := todo.decision with input as object.union(r, {"subject": {"type": "service"}})
	d.allow == false
	d.reasons[0].code == "subject_type_unsupported"
}

test_unknown_user_is_denied if {
	stranger := todo.subject_id_for_user("00000000-0000-0000-0000-000000000000")
	d := todo.decision with input as request(stranger, "can_read_todos", {"type": "todo", "id": "t1"})
	d.allow == false
	d.reasons[0].code == "subject_unknown"
}

test_malformed_subject_id_is_denied_not_an_error if {
	d := todo.decision with input as request("/w==", "can_read_todos", {"type": "todo", "id": "t1"})
	d.reasons[0].code == "subject_unknown"
}

test_unknown_action_is_denied if {
	d := todo.decision with input as request(rick, "can_launch_portal_gun", {"type": "todo", "id": "t1"})
	d.allow == false
	d.reasons[0].code == "action_unknown"
}

test_action_on_wrong_resource_type_is_denied if {
	d := todo.decision with input as request(rick, "can_read_user", {"type": "todo", "id": "t1"})
	d.allow == false
	d.reasons[0].code == "resource_type_mismatch"
}

test_viewer_creating_a_todo_is_not_permitted if {
	d := todo.decision with input as request(beth, "can_create_todo", {"type": "todo", "id": "t1"})
	d == {"allow": false, "reasons": [{
		"code": "not_permitted",
		"message": "no rule grants this action to this subject on this resource",
	}]}
}

test_editor_without_owner_id_cannot_update if {
	d := todo.decision with input as request(morty, "can_update_todo", {"type": "todo", "id": "t1"})
	d.allow == false
}

test_allow_names_the_grant if {
	d := todo.decision with input as request(morty, "can_delete_todo", todo_owned_by("morty@the-citadel.com"))
	d == {"allow": true, "reasons": [{
		"code": "granted_to_owner",
		"message": "role editor may can_delete_todo on to-dos the user owns",
	}]}
}

test_allow_lists_every_grant_that_applies if {
	d := todo.decision with input as request(rick, "can_create_todo", {"type": "todo", "id": "t1"})
	d.allow == true
	d.reasons == [{"code": "granted_by_role", "message": "role admin may can_create_todo"}]
}

test_revoked_token_is_denied if {
	r := request(rick, "can_read_todos", {"type": "todo", "id": "t1"})
	revoked := {"authenticated": true, "sub": "rick", "revoked": {"revoked": true, "reason": "compromised"}}
	d := todo.decision with input as object.union(r, {"subject": revoked})
	d.allow == false
	d.reasons[0].code == "subject_revoked"
}

test_verified_token_fields_do_not_change_the_decision if {
	r := request(morty, "can_update_todo", todo_owned_by("rick@the-citadel.com"))
	token_subject := {
		"authenticated": true, "iss": "https://issuer.example", "sub": "morty", "scopes": ["todo"],
		"revoked": {"revoked": false},
	}
	d := todo.decision with input as object.union(r, {"subject": token_subject})
	d.allow == false
	d.reasons[0].code == "not_permitted"
}

# --- search candidates

test_subject_candidates_are_every_user_sorted_by_user_id if {
	subjects := todo.candidates.subjects with input as {"action": {"name": "can_read_todos"}}
	count(subjects) == 5
	subjects[0] == {"type": "user", "id": rick}
	subjects[1] == {"type": "user", "id": morty}
}

test_subject_candidates_follow_the_searched_type if {
	todo.candidates.subjects == [] with input as {"subject": {"type": "service"}}
	count(todo.candidates.subjects) == 5 with input as {"subject": {"type": "user"}}
}

test_every_subject_candidate_is_a_known_user if {
	every subject in todo.candidates.subjects {
		todo.decision.allow with input as request(subject.id, "can_read_todos", {"type": "todo", "id": "t1"})
	}
}

test_resource_candidates_are_users_by_email if {
	resources := todo.candidates.resources with input as {"resource": {"type": "user"}}
	resources == [
		{"type": "user", "id": "beth@the-smiths.com"},
		{"type": "user", "id": "jerry@the-smiths.com"},
		{"type": "user", "id": "morty@the-citadel.com"},
		{"type": "user", "id": "rick@the-citadel.com"},
		{"type": "user", "id": "summer@the-smiths.com"},
	]
}

test_no_todo_resource_candidates if {
	todo.candidates.resources == [] with input as {"resource": {"type": "todo"}}
}

test_action_candidates_are_every_action_sorted if {
	todo.candidates.actions == [
		{"name": "can_create_todo"},
		{"name": "can_delete_todo"},
		{"name": "can_read_todos"},
		{"name": "can_read_user"},
		{"name": "can_update_todo"},
	] with input as {}
}

test_action_candidates_follow_the_resource_type if {
	todo.candidates.actions == [{"name": "can_read_user"}] with input as {"resource": {"type": "user", "id": "beth@the-smiths.com"}}
}
