package todo

# What each action applies to and who it is granted to: `roles` grants it to
# holders of any of those roles, `owner_roles` only when the to-do is theirs
# (resource.properties.ownerID is the owner's email), `every_user` to any
# known user.
actions := {
	"can_read_user": {"resource_type": "user", "every_user": true},
	"can_read_todos": {"resource_type": "todo", "every_user": true},
	"can_create_todo": {"resource_type": "todo", "roles": {"admin", "editor"}},
	"can_update_todo": {"resource_type": "todo", "roles": {"evil_genius"}, "owner_roles": {"editor"}},
	"can_delete_todo": {"resource_type": "todo", "roles": {"admin"}, "owner_roles": {"editor"}},
}

# METADATA
# title: Decision
# description: |
#   The AuthZEN evaluation: {allow, reasons}. Denies with the first problem
#   found (revoked token, subject, action, resource type), otherwise allows when at least one
#   grant applies and lists every grant that does as reasons.
# entrypoint: true
default decision := {"allow": false, "reasons": [{
	"code": "not_permitted",
	"message": "no rule grants this action to this subject on this resource",
}]}

decision := {"allow": false, "reasons": [denial]} if denial

else := {"allow": true, "reasons": sort(grants)} if count(grants) > 0

# METADATA
# description: The directory entry of the requesting user, undefined for unknown subjects.
user := data.todo.users[user_id_from_subject_id(input.subject.id)] if input.subject.type == "user"

action := actions[input.action.name]

# Arbiter sets input.subject.revoked from its revocation list: for the access token
# when the PEP sent one (a revoked token taints the whole request, asserted ids
# included), and for a sub revocation naming the asserted subject id.
denial := {
	"code": "subject_revoked",
	"message": "the subject, or the access token presented with this request, is revoked",
} if {
	input.subject.revoked.revoked == true
} else := {
	"code": "subject_type_unsupported",
	"message": "subjects must have type \"user\"",
} if {
	not input.subject.type == "user"
} else := {
	"code": "subject_unknown",
	"message": "the subject id is not the id of a known user",
} if {
	not user
} else := {
	"code": "action_unknown",
	"message": "the action is not one this policy knows",
} if {
	not action
} else := {
	"code": "resource_type_mismatch",
	"message": concat("", [input.action.name, " applies to resources of type ", action.resource_type]),
} if {
	not input.resource.type == action.resource_type
}

grants contains {
	"code": "granted_to_every_user",
	"message": concat("", ["every known user may ", input.action.name]),
} if {
	action.every_user
	user
}

grants contains {
	"code": "granted_by_role",
	"message": concat("", ["role ", role, " may ", input.action.name]),
} if {
	some role in action.roles
	role in user.roles
}

grants contains {
	"code": "granted_to_owner",
	"message": concat("", ["role ", role, " may ", input.action.name, " on to-dos the user owns"]),
} if {
	some role in action.owner_roles
	role in user.roles
	input.resource.properties.ownerID == user.email
}
