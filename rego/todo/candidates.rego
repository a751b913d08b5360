# METADATA
# title: AuthZEN search candidates
# description: |
#   The entities an AuthZEN search may return. Arbiter evaluates todo/decision
#   for each candidate, with the candidate in place of the searched entity, and
#   returns those allowed: candidates only enumerate, the decision decides.
#   Each list is sorted so that pages are stable across requests.
package todo.candidates

import data.todo

# METADATA
# title: Subject candidates
# description: Every user in the directory, as {type, id} with the opaque subject id.
# entrypoint: true
subjects := [{"type": "user", "id": todo.subject_id_for_user(user_id)} |
	searched_type_is("subject", "user")
	some user_id in sort(object.keys(data.todo.users))
]

# METADATA
# title: Resource candidates
# description: |
#   Users as resources of type "user" (ids are emails, as in can_read_user).
#   To-dos live in the application, not in the bundle's data, so a search for
#   resources of type "todo" has no candidates.
# entrypoint: true
resources := [{"type": "user", "id": email} |
	searched_type_is("resource", "user")
	some email in sort([user.email | some user in data.todo.users])
]

# METADATA
# title: Action candidates
# description: Every action the policy knows, narrowed to the resource's type when the request names one.
# entrypoint: true
actions := [{"name": name} |
	some name in sort(object.keys(todo.actions))
	searched_type_is("resource", todo.actions[name].resource_type)
]

# A search request may name the type of the entity it searches for (AuthZEN
# requires it for subjects and resources) or leave the entity out entirely.
searched_type_is(entity, _) if not input[entity].type

searched_type_is(entity, type) if input[entity].type == type
