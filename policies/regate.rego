# regate's default policy library: the decision document.
#
# For every request regate evaluates data.regate.decision (the path can be
# changed with the decision setting) with the request as `input` (schema v1,
# see parse.Input) and expects an object:
#
#   {
#     "allow": false,
#     "reasons": ["DROP is not allowed: it destroys data (DROP TABLE public.t)"],
#     "approval": {"groups": ["dba"], "reason": "..."},
#     "mask": [{"column": "email"}]
#   }
#
# This package builds that object from three sets that any rule in package
# regate can add to:
#
#   deny               reasons (strings) to block the request; the request is
#                      allowed exactly when deny is empty, and then "reasons"
#                      is []
#   mask               masking obligations: {"column": name}, {"field": name}
#                      or {"detector": name}, each with an optional "with"
#   approval_required  {"groups": [group, ...], "reason": text}: the request
#                      waits for a human approval from one of the groups
#
# Protocol rules live in their own packages (regate.postgres) and are pulled in
# below. Requests of protocols without rules (ssh, kubernetes, http for now)
# are allowed.
#
# Extending: a configured bundle replaces this embedded library, so start the
# bundle from copies of regate.rego and postgres.rego (their *_test.rego files
# too, to keep their tests) and add files of your own. Rules in package regate
# add to the sets directly:
#
#   package regate
#
#   deny contains "writes to the billing schema need a ticket" if {
#     input.protocol == "postgres"
#     some i, j
#     rel := input.postgres.statements[i].relations[j]
#     rel.schema == "billing"
#     rel.access != "read"
#   }
#
# (Reading statements by index, rather than binding whole statements with
# `some stmt in input.postgres.statements`, lets regate reuse the decision for
# simple-protocol texts that differ only in their literals.)
#
#   mask contains {"column": "email"} if input.target.labels.env == "prod"
#
# Rules kept in a package of your own (package regate.acme) take part once a
# rule in package regate collects them, one per set:
#
#   deny contains msg if some msg in data.regate.acme.deny
#
# Deny always wins: allow is computed from deny alone. An extra `allow` rule
# grants nothing; where it disagrees with the one below, evaluation fails with
# a conflict and the request is denied. If the bundle's .manifest lists roots,
# they must include "regate".
#
# Replacing: leave this file out and define data.regate.decision yourself (or
# any document, with the decision path setting pointing at it). A second
# `decision` next to this file does not replace it: whenever the two differ,
# evaluation fails with a conflict and the request is denied. Whatever
# replaces the library must return the object above; anything else denies.
package regate

# deny is the set of reasons to block the request, as readable sentences.
deny contains msg if {
	some msg in data.regate.postgres.deny
}

# mask is the set of masking obligations on what comes back from the target.
mask contains obligation if {
	some obligation in data.regate.postgres.mask
}

# approval_required asks for a human approval before the request is forwarded.
approval_required contains approval if {
	some approval in data.regate.postgres.approval_required
}

# allow is true exactly when no deny rule matched.
allow := count(deny) == 0

# reasons are the deny reasons in sorted order.
reasons := sort(deny)

# approval merges every approval_required entry: the union of their groups and
# their reasons joined by "; ".
approval := {
	"groups": sort(_approval_groups),
	"reason": concat("; ", sort(_approval_reasons)),
}

_approval_groups contains group if {
	some a in approval_required
	some group in a.groups
}

_approval_reasons contains a.reason if some a in approval_required

# decision is the document regate evaluates: "mask" and "approval" are there
# only when some rule asks for them.
decision := object.union(object.union({"allow": allow, "reasons": reasons}, _mask_part), _approval_part)

default _mask_part := {}

_mask_part := {"mask": sort(mask)} if count(mask) > 0

default _approval_part := {}

_approval_part := {"approval": approval} if count(approval_required) > 0
