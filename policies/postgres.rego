# Default SQL rules for PostgreSQL requests.
#
# Every rule looks at one statement of input.postgres.statements at a time, so
# one bad statement in a multi-statement query blocks the whole query. Each
# reason names the command, why it is blocked and, in parentheses, what the
# statement touches.
#
# Blocked: DROP (any object, schema, database or role), TRUNCATE, DELETE and
# UPDATE without WHERE (also inside WITH, EXPLAIN ANALYZE or PREPARE), ALTER
# SYSTEM, COPY ... PROGRAM, the server_file_functions, value_export_functions
# and query_functions below, DO blocks and CREATE FUNCTION/PROCEDURE (code
# the parse cannot see into), CREATE ROLE, ALTER ROLE and GRANT. Everything
# else is allowed.
package regate.postgres

# server_file_functions read or write files on the database server; a
# statement calling one of them is blocked.
server_file_functions := {
	"lo_export",
	"lo_import",
	"pg_ls_dir",
	"pg_read_binary_file",
	"pg_read_file",
	"pg_stat_file",
}

# value_export_functions hand a value to something outside the statement's
# result (a setting, a notification, another database, a large object, the
# write-ahead log): called with a masked column in a WHERE clause, they would
# carry its value past the masks. A statement calling one of them is blocked.
value_export_functions := {
	"dblink",
	"dblink_exec",
	"dblink_send_query",
	"lo_from_bytea",
	"lo_put",
	"lowrite",
	"pg_logical_emit_message",
	"pg_notify",
	"set_config",
}

# query_functions run SQL given as text, or read whole tables, schemas,
# databases, open cursors, table and index pages or the changes logged to
# them (also those of the contrib extensions tablefunc, dblink, pageinspect
# and pg_walinspect), inside the database: what they read is not in the
# statement, so neither these rules nor regate's column masks see it
# (query_to_xml('SELECT email FROM customers', …) returns the emails unmasked).
# A statement calling one of them is blocked.
query_functions := {
	"brin_page_items",
	"bt_page_items",
	"connectby",
	"crosstab",
	"crosstab2",
	"crosstab3",
	"crosstab4",
	"cursor_to_xml",
	"database_to_xml",
	"database_to_xml_and_xmlschema",
	"dblink_fetch",
	"dblink_get_result",
	"get_raw_page",
	"gin_leafpage_items",
	"gist_page_items",
	"gist_page_items_bytea",
	"hash_page_items",
	"heap_page_item_attrs",
	"heap_page_items",
	"pg_get_wal_block_info",
	"pg_logical_slot_get_binary_changes",
	"pg_logical_slot_get_changes",
	"pg_logical_slot_peek_binary_changes",
	"pg_logical_slot_peek_changes",
	"query_to_xml",
	"query_to_xml_and_xmlschema",
	"query_to_xmlschema",
	"schema_to_xml",
	"schema_to_xml_and_xmlschema",
	"table_to_xml",
	"table_to_xml_and_xmlschema",
	"ts_rewrite",
	"ts_stat",
	"tuple_data_split",
}

# statements are the parsed statements of a postgres request (undefined for
# other protocols). The rules below no longer use it, since they read
# statements by index (see _checked); it stays for rules of your own written
# against it, which then read whole statements.
statements := input.postgres.statements if input.protocol == "postgres"

# deny holds the reasons of the rules below (_deny), each about one statement
# of _checked; when no statement needs checking (a plain SELECT), none of
# them is evaluated, which keeps the common read cheap to decide. Rules of
# your own may add to deny directly.
deny contains msg if {
	some msg in _deny
}

# Each rule decides on single fields of the statement, by its index, before it
# binds the statement as a whole (stmt) to build its reason: so a statement
# that no rule blocks, such as a DELETE with a WHERE clause, is decided
# without reading its tree, and the policy engine can reuse the decision for
# texts that differ only in their literals (see _checked).
_deny contains msg if {
	some i in _checked
	_is_drop_at(i)
	stmt := input.postgres.statements[i]
	msg := sprintf("DROP is not allowed: it destroys data (%s)", [_drop_subject(stmt)])
}

_deny contains msg if {
	some i in _checked
	_is_at(i, "TRUNCATE", "TruncateStmt")
	stmt := input.postgres.statements[i]
	msg := sprintf("TRUNCATE is not allowed: it deletes every row (%s)", [_subject("TRUNCATE", stmt)])
}

_deny contains msg if {
	some i in _checked
	_is_at(i, "DELETE", "DeleteStmt")
	not input.postgres.statements[i].has_where
	stmt := input.postgres.statements[i]
	msg := sprintf("DELETE without WHERE is not allowed: it deletes every row (%s)", [_subject("DELETE FROM", stmt)])
}

_deny contains msg if {
	some i in _checked
	_is_at(i, "UPDATE", "UpdateStmt")
	not input.postgres.statements[i].has_where
	stmt := input.postgres.statements[i]
	msg := sprintf("UPDATE without WHERE is not allowed: it changes every row (%s)", [_subject("UPDATE", stmt)])
}

# A DELETE or UPDATE nested in another statement (a WITH query, EXPLAIN
# ANALYZE, PREPARE, COPY (...) TO, CREATE RULE) is checked on its own WHERE
# clause.
_deny contains msg if {
	some i in _checked
	_may_carry(i)
	stmt := input.postgres.statements[i]
	some nested in _nested_statements(stmt)
	some kind, dml in _nested_dml
	inner := nested[kind]
	not inner.whereClause
	msg := sprintf("%s without WHERE is not allowed: it %s every row (%s %s inside %s)", [
		dml.command, dml.effect, dml.subject, _target_of(inner), _verb(stmt),
	])
}

_deny contains msg if {
	some i in _checked
	_is_at(i, "ALTER SYSTEM", "AlterSystemStmt")
	stmt := input.postgres.statements[i]
	msg := sprintf("ALTER SYSTEM is not allowed: it changes the server configuration (%s)", [_subject("ALTER SYSTEM", stmt)])
}

_deny contains msg if {
	some i in _checked
	input.postgres.statements[i].ast.CopyStmt
	input.postgres.statements[i].ast.CopyStmt.is_program == true
	stmt := input.postgres.statements[i]
	msg := sprintf("COPY ... PROGRAM is not allowed: it runs a shell command on the database server (%s)", [_copy_subject(stmt)])
}

_deny contains msg if {
	some i in _checked
	some fn in input.postgres.statements[i].functions
	name := _base_name(fn)
	name in server_file_functions
	stmt := input.postgres.statements[i]
	msg := sprintf("%s() is not allowed: it reads or writes files on the database server (called in %s)", [name, _subject(_verb(stmt), stmt)])
}

_deny contains msg if {
	some i in _checked
	some fn in input.postgres.statements[i].functions
	name := _base_name(fn)
	name in value_export_functions
	stmt := input.postgres.statements[i]
	msg := sprintf("%s() is not allowed: it passes values outside the result, past the masks (called in %s)", [name, _subject(_verb(stmt), stmt)])
}

_deny contains msg if {
	some i in _checked
	some fn in input.postgres.statements[i].functions
	name := _base_name(fn)
	name in query_functions
	stmt := input.postgres.statements[i]
	msg := sprintf("%s() is not allowed: it runs a query or reads a table the policy cannot see into (called in %s)", [name, _subject(_verb(stmt), stmt)])
}

# A DO block or a function's body is code the parse does not see into: it
# could run any statement the rules here block, or RAISE what it reads.
_deny contains msg if {
	some i in _checked
	some node, verb in _opaque_code_nodes
	_is_at(i, verb, node)
	stmt := input.postgres.statements[i]
	msg := sprintf("%s is not allowed: it runs code the policy cannot see into (%s)", [verb, _subject(verb, stmt)])
}

_opaque_code_nodes := {"DoStmt": "DO", "CreateFunctionStmt": "CREATE FUNCTION"}

_deny contains msg if {
	some i in _checked
	some node, verb in _role_nodes
	_is_at(i, verb, node)
	stmt := input.postgres.statements[i]
	msg := sprintf("%s is not allowed: it changes who can connect and what they may do (%s)", [verb, _subject(verb, stmt)])
}

_deny contains msg if {
	some i in _checked
	_is_grant_at(i)
	stmt := input.postgres.statements[i]
	msg := sprintf("GRANT is not allowed: it gives privileges to roles (%s)", [_subject("GRANT", stmt)])
}

# Masking. Result columns named in data.regate.postgres.masked_columns (the
# library ships regate/postgres/data.json: email, ssn, card_number, password)
# are masked in every postgres result: by result name or by source column, so
# an alias does not escape the mask ("table.column" entries name one table's
# column). Edit that file in your bundle to change the list.
mask contains {"column": column} if {
	_has_statements
	some column in data.regate.postgres.masked_columns
}

# Approval. On targets labelled env: prod, a statement that writes to (or
# changes the definition of) a relation listed in
# data.regate.postgres.protected_tables ("name" or "schema.name"; empty in
# the shipped data.json) waits for a member of group dba to approve it.
approval_required contains {"groups": ["dba"], "reason": reason} if {
	input.target.labels.env == "prod"
	input.protocol == "postgres"
	some i, j
	rel := input.postgres.statements[i].relations[j]
	rel.access != "read"
	_protected(rel)
	reason := sprintf("%s on %s, a protected table of a prod target, needs a DBA's approval", [_verb(input.postgres.statements[i]), _relation_name(rel)])
}

_protected(rel) if rel.name in data.regate.postgres.protected_tables

_protected(rel) if sprintf("%s.%s", [rel.schema, rel.name]) in data.regate.postgres.protected_tables

# Helpers. Names starting with _ are internal and may change.

# _checked are the indexes in input.postgres.statements of the statements the
# deny rules look at: every statement but a plain SELECT (no function call, no
# WITH clause), which none of them could block. Skipping those keeps the
# common read cheap to decide.
#
# The rules of this file read single fields of a statement by its index
# (command, node, functions, relations, has_where, or whether a part of its
# tree exists), and bind a whole statement only once it is blocked, to build
# the reason, or when it carries statements of its own (_may_carry). That
# lets the policy engine see that the decision for a statement it allows
# does not depend on the values of the integer literals written in the text,
# and reuse it for texts that differ only in those (see Decision in the
# README).
_checked contains i if {
	input.protocol == "postgres"
	some i
	input.postgres.statements[i]
	not _plain_select(i)
}

_plain_select(i) if {
	input.postgres.statements[i].command == "SELECT"
	input.postgres.statements[i].node == "SelectStmt"
	count(input.postgres.statements[i].functions) == 0
	not input.postgres.statements[i].ast.SelectStmt.withClause
}

# _has_statements: a postgres request with statements (statements is null
# only in documents made by hand).
_has_statements if {
	input.protocol == "postgres"
	input.postgres.statements[_]
}

_nested_dml := {
	"DeleteStmt": {"command": "DELETE", "effect": "deletes", "subject": "DELETE FROM"},
	"UpdateStmt": {"command": "UPDATE", "effect": "changes", "subject": "UPDATE"},
}

_role_nodes := {
	"AlterRoleSetStmt": "ALTER ROLE",
	"AlterRoleStmt": "ALTER ROLE",
	"CreateRoleStmt": "CREATE ROLE",
}

_drop_kinds := {
	"DropOwnedStmt": "OWNED BY",
	"DropRoleStmt": "ROLE",
	"DropSubscriptionStmt": "SUBSCRIPTION",
	"DropTableSpaceStmt": "TABLESPACE",
	"DropUserMappingStmt": "USER MAPPING",
	"DropdbStmt": "DATABASE",
}

# _list_fields and _single_fields name the pg_query field that holds what a
# statement acts on, for the reasons of statements without relations.
_list_fields := {
	"DropOwnedStmt": "roles",
	"DropRoleStmt": "roles",
	"DropStmt": "objects",
	"GrantRoleStmt": "granted_roles",
	"GrantStmt": "objects",
	"TruncateStmt": "relations",
}

_single_fields := {
	"AlterRoleSetStmt": "role",
	"AlterRoleStmt": "role",
	"AlterSystemStmt": "setstmt",
	"CopyStmt": "relation",
	"CreateRoleStmt": "role",
	"DeleteStmt": "relation",
	"DropSubscriptionStmt": "subname",
	"DropTableSpaceStmt": "tablespacename",
	"DropdbStmt": "dbname",
	"UpdateStmt": "relation",
}

# _is_at tells whether statement i is the command, by its command tag or
# pg_query node.
_is_at(i, command, _) if input.postgres.statements[i].command == command

_is_at(i, _, node) if input.postgres.statements[i].node == node

_is_drop_at(i) if input.postgres.statements[i].command == "DROP"

_is_drop_at(i) if startswith(input.postgres.statements[i].command, "DROP ")

_is_drop_at(i) if startswith(input.postgres.statements[i].node, "Drop")

_is_grant_at(i) if input.postgres.statements[i].command == "GRANT"

_is_grant_at(i) if {
	input.postgres.statements[i].ast.GrantStmt
	input.postgres.statements[i].ast.GrantStmt.is_grant == true
}

_is_grant_at(i) if {
	input.postgres.statements[i].ast.GrantRoleStmt
	input.postgres.statements[i].ast.GrantRoleStmt.is_grant == true
}

# _may_carry tells whether statement i may carry statements of its own (see
# _nested_statements), by testing only whether parts of its tree exist.
_may_carry(i) if input.postgres.statements[i].ast[_].withClause

_may_carry(i) if input.postgres.statements[i].ast.ExplainStmt

_may_carry(i) if input.postgres.statements[i].ast.PrepareStmt

_may_carry(i) if input.postgres.statements[i].ast.CopyStmt

_may_carry(i) if input.postgres.statements[i].ast.RuleStmt

# _nested_statements are the statements a statement carries and runs: the
# query of EXPLAIN ANALYZE, PREPARE and COPY (...) TO, the actions of CREATE
# RULE, and the queries of the WITH clauses of all of these and of the
# statement itself (Postgres allows data-modifying WITH queries only at the
# top level). EXPLAIN without ANALYZE does not run its query.
_nested_statements(stmt) := array.concat(carried, ctes) if {
	carried := _carried(stmt)
	ctes := [cte.CommonTableExpr.ctequery |
		some query in array.concat([stmt.ast], carried)
		some body in query
		some cte in body.withClause.ctes
	]
}

_carried(stmt) := [stmt.ast.ExplainStmt.query] if {
	_explain_analyze(stmt)
} else := [stmt.ast.PrepareStmt.query] if {
	stmt.ast.PrepareStmt.query
} else := [stmt.ast.CopyStmt.query] if {
	stmt.ast.CopyStmt.query
} else := stmt.ast.RuleStmt.actions if {
	stmt.ast.RuleStmt.actions
} else := []

_explain_analyze(stmt) if {
	some opt in stmt.ast.ExplainStmt.options
	opt.DefElem.defname == "analyze"
}

# Every helper a deny rule uses to build its message is defined for any
# defined arguments (ending in a plain else), so that no deny rule can fail to
# match because its message could not be built. Arguments passed to them are
# always defined.

# _verb is the statement's command tag, or its node when the tag is missing.
_verb(stmt) := stmt.command if {
	is_string(stmt.command)
	stmt.command != ""
} else := stmt.node if {
	is_string(stmt.node)
	stmt.node != ""
} else := "statement"

# _subject is verb followed by what the statement acts on, e.g.
# "TRUNCATE public.t".
_subject(verb, stmt) := sprintf("%s %s", [verb, concat(", ", names)]) if {
	names := _names(stmt)
	count(names) > 0
} else := verb

_drop_subject(stmt) := _subject(stmt.command, stmt) if {
	contains(stmt.command, " ")
} else := _subject(sprintf("DROP %s", [kind]), stmt) if {
	kind := _drop_kind(stmt)
} else := _subject("DROP", stmt)

_drop_kind(stmt) := _object_type(stmt.ast.DropStmt.removeType) if stmt.node == "DropStmt"

else := _drop_kinds[stmt.node]

_object_type("OBJECT_MATVIEW") := "MATERIALIZED VIEW"

_object_type(t) := replace(trim_prefix(t, "OBJECT_"), "_", " ") if t != "OBJECT_MATVIEW"

_copy_subject(stmt) := sprintf("COPY %s %s PROGRAM", [target, direction]) if {
	copy := stmt.ast.CopyStmt
	target := _copy_target(copy)
	direction := _copy_direction(copy)
}

_copy_target(copy) := _object_name(copy.relation) if copy.relation

else := "(query)"

_copy_direction(copy) := "FROM" if copy.is_from == true

else := "TO"

# _names lists what the statement acts on: the relations it writes or
# changes, else all its relations, else names taken from its pg_query tree.
_names(stmt) := names if {
	names := sort({_relation_name(rel) | some rel in stmt.relations; rel.access != "read"})
	count(names) > 0
} else := names if {
	names := sort({_relation_name(rel) | some rel in stmt.relations})
	count(names) > 0
} else := _ast_names(stmt)

_relation_name(rel) := sprintf("%s.%s", [rel.schema, rel.name]) if rel.schema != ""

else := rel.name

_ast_names(stmt) := sort({name | some x in stmt.ast[stmt.node][field]; name := _object_name(x)}) if {
	field := _list_fields[stmt.node]
} else := [name] if {
	name := _object_name(stmt.ast[stmt.node][_single_fields[stmt.node]])
} else := []

# _object_name renders a pg_query name node: a RangeVar, a qualified name
# list, a String, a RoleSpec, a function, a privilege or a SET statement.
_object_name(x) := x if is_string(x)

else := _range_var(x.RangeVar) if x.RangeVar

else := _range_var(x) if x.relname

else := concat(".", [part.String.sval | some part in x.List.items]) if x.List

else := x.String.sval if x.String

else := concat(".", [part.String.sval | some part in x.ObjectWithArgs.objname]) if x.ObjectWithArgs

else := x.RoleSpec.rolename if x.RoleSpec

else := x.rolename if x.rolename

else := x.AccessPriv.priv_name if x.AccessPriv

else := x.name if x.name

# _target_of names the relation of a DELETE or UPDATE tree.
_target_of(dml) := name if {
	name := _object_name(dml.relation)
} else := "?"

_range_var(rv) := sprintf("%s.%s", [rv.schemaname, rv.relname]) if rv.schemaname != ""

else := rv.relname

# _base_name is a function name without its schema, lower-case.
_base_name(fn) := lower(name) if {
	parts := split(fn, ".")
	name := parts[count(parts) - 1]
}
