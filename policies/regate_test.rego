package regate_test

import data.regate

request(statements) := {
	"version": 1,
	"protocol": "postgres",
	"identity": {"subject": "alice", "groups": ["dev"]},
	"target": {"name": "prod", "protocol": "postgres"},
	"postgres": {"database": "app", "user": "app", "query": "...", "statements": statements},
}

select_1 := {
	"command": "SELECT", "node": "SelectStmt", "relations": [],
	"has_where": false, "functions": [],
	"ast": {"SelectStmt": {"targetList": [{"ResTarget": {"val": {"A_Const": {"ival": {"ival": 1}}}}}]}},
}

drop_t := {
	"command": "DROP", "node": "DropStmt",
	"relations": [{"schema": "public", "name": "t", "access": "ddl"}],
	"has_where": false, "functions": [],
	"ast": {"DropStmt": {"objects": [{"List": {"items": [{"String": {"sval": "t"}}]}}], "removeType": "OBJECT_TABLE"}},
}

truncate_t := {
	"command": "TRUNCATE", "node": "TruncateStmt",
	"relations": [{"schema": "public", "name": "t", "access": "write"}],
	"has_where": false, "functions": [],
	"ast": {"TruncateStmt": {"relations": [{"RangeVar": {"relname": "t"}}]}},
}

test_safe_request_allowed_without_reasons if {
	regate.decision == {"allow": true, "reasons": []} with input as request([select_1])
		with data.regate.postgres.masked_columns as []
}

test_blocked_request_denied_with_reasons if {
	regate.decision == {
		"allow": false,
		"reasons": ["DROP is not allowed: it destroys data (DROP TABLE public.t)"],
	} with input as request([drop_t])
		with data.regate.postgres.masked_columns as []
}

test_one_bad_statement_denies_the_whole_request if {
	d := regate.decision with input as request([select_1, drop_t, select_1])
	d.allow == false
	count(d.reasons) == 1
}

test_reasons_are_sorted if {
	d := regate.decision with input as request([truncate_t, drop_t])
	d.reasons == [
		"DROP is not allowed: it destroys data (DROP TABLE public.t)",
		"TRUNCATE is not allowed: it deletes every row (TRUNCATE public.t)",
	]
}

test_other_protocols_allowed if {
	regate.decision == {"allow": true, "reasons": []} with input as {"version": 1, "protocol": "ssh"}
}

test_extra_deny_rules_deny if {
	d := regate.decision with input as request([select_1])
		with regate.deny as {"no access on Sundays"}
	d.allow == false
	d.reasons == ["no access on Sundays"]
}

test_mask_obligations_in_decision if {
	d := regate.decision with input as request([select_1])
		with data.regate.postgres.mask as {{"column": "email"}, {"detector": "iban", "with": "***"}}
	d.allow == true
	d.mask == [{"column": "email"}, {"detector": "iban", "with": "***"}]
}

test_approvals_merged if {
	d := regate.decision with input as request([select_1])
		with data.regate.postgres.approval_required as {
			{"groups": ["dba"], "reason": "schema change"},
			{"groups": ["sre", "dba"], "reason": "production"},
		}
	d.approval == {"groups": ["dba", "sre"], "reason": "production; schema change"}
}

test_no_approval_and_default_masks if {
	d := regate.decision with input as request([select_1])
	not d.approval
	d.mask == [{"column": "card_number"}, {"column": "email"}, {"column": "password"}, {"column": "ssn"}]
}

test_no_masks_without_masked_columns if {
	d := regate.decision with input as request([select_1])
		with data.regate.postgres.masked_columns as []
	not d.mask
}
