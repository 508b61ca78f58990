// Package sql turns PostgreSQL statement text into the statements of the
// input document (parse.Statement), using the real Postgres parser through
// pg_query_go (libpg_query). Nothing is executed and no catalog is consulted:
// every field is derived from the raw parse tree alone.
//
// # Statements
//
// A query text may hold several statements separated by semicolons; they are
// returned in source order. A text with only whitespace and comments yields
// zero statements and no error. A text that does not parse yields an error
// "cannot parse SQL: <parser message> at position <n>" (n is the 1-based
// character position the parser reported) which wraps the pg_query error.
// A text containing a NUL byte is rejected, since the parser would silently
// stop at it.
//
// # Command
//
// Command is the leading keyword(s) of the command tag Postgres reports for
// the statement, always in the same short form: SELECT, INSERT, UPDATE,
// DELETE, MERGE, COPY, CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, BEGIN,
// COMMIT, ROLLBACK, … See commands in command.go for the complete mapping
// from node type to Command. Notable choices:
//   - every CREATE …/ALTER …/DROP … statement is just CREATE, ALTER or DROP
//     (Node tells them apart), including CREATE TABLE AS and CREATE
//     MATERIALIZED VIEW; SELECT … INTO is SELECT, as Postgres tags it;
//   - GrantStmt and GrantRoleStmt are GRANT or REVOKE;
//   - TransactionStmt is BEGIN (also for START TRANSACTION), COMMIT,
//     ROLLBACK (also ROLLBACK TO SAVEPOINT), SAVEPOINT, RELEASE, and the
//     two-phase forms PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED;
//   - VariableSetStmt is SET or RESET; VacuumStmt is VACUUM or ANALYZE;
//     FetchStmt is FETCH or MOVE; SecLabelStmt is SECURITY LABEL;
//   - a node type not in the table becomes CREATE, ALTER or DROP when its name
//     starts with Create, Alter or Drop, and otherwise its name upper-cased
//     without the "Stmt" suffix (e.g. a hypothetical FooStmt becomes FOO).
//
// # Relations
//
// Relations lists every relation (RangeVar) anywhere in the statement, once
// per distinct (schema, name, access), in source order. Schema is "" when the
// name is unqualified (a catalog/database qualifier is dropped). Access is:
//   - "write" for the target of INSERT, UPDATE, DELETE and MERGE (also when
//     nested, e.g. in a data-modifying CTE, EXPLAIN or PREPARE), for the tables
//     of TRUNCATE, for the table of COPY … FROM, and for LOCK in any mode
//     stronger than ACCESS SHARE;
//   - "ddl" for the relation a DDL or maintenance statement creates, alters,
//     drops or takes ownership-level action on: CREATE TABLE (and its INHERITS /
//     PARTITION OF parents), CREATE FOREIGN TABLE, CREATE TABLE AS, SELECT …
//     INTO, CREATE [MATERIALIZED] VIEW, CREATE INDEX, CREATE/ALTER SEQUENCE,
//     CREATE TRIGGER, CREATE/ALTER POLICY, CREATE RULE, CREATE TYPE … AS,
//     CREATE STATISTICS, CREATE PUBLICATION … FOR TABLE, ALTER TABLE (also its
//     INHERIT and ATTACH/DETACH PARTITION targets), ALTER … RENAME / SET SCHEMA
//     / OWNER TO / DEPENDS ON, DROP TABLE/VIEW/MATERIALIZED VIEW/INDEX/
//     SEQUENCE/FOREIGN TABLE, GRANT/REVOKE on tables, the table list of IMPORT
//     FOREIGN SCHEMA (remote names), COMMENT ON and SECURITY
//     LABEL ON a relation or column, VACUUM, ANALYZE, CLUSTER, REINDEX and
//     REFRESH MATERIALIZED VIEW;
//   - "read" for every other relation: FROM and USING clauses, joins,
//     subqueries, CTE bodies, MERGE sources, COPY … TO, LOCK … IN ACCESS SHARE
//     MODE, LIKE sources and REFERENCES targets of CREATE TABLE, and so on.
//     SELECT … FOR UPDATE/SHARE stays a read (its lockingClause is in the AST);
//     the names after FOR UPDATE OF refer to FROM items and are not listed.
//
// Schemas and databases named directly by DROP SCHEMA, DROP DATABASE,
// GRANT/REVOKE … ON SCHEMA / ON DATABASE / ON ALL … IN SCHEMA, and COMMENT ON
// / SECURITY LABEL ON SCHEMA or DATABASE are listed as a relation
// {schema: "", name: <schema or database name>, access: "ddl"}; policies tell
// them apart from tables by Node and the AST.
//
// A read of an unqualified name that matches a CTE visible at that point (the
// statement's own WITH list, or an enclosing one; for a non-recursive WITH only
// the earlier CTEs are visible inside a CTE body) is taken to be a reference to
// the CTE and is not listed. This is best effort: it follows the SQL scoping
// rules but cannot know about the search_path.
//
// Function bodies given as strings (CREATE FUNCTION … AS $$…$$, DO $$…$$) are
// opaque to the parser; the relations and functions used inside them are not
// listed.
//
// # Functions
//
// Functions lists the name of every function call (FuncCall nodes, including
// CALL) in the statement, lower-cased, in source order without duplicates. A
// schema-qualified call such as pg_catalog.pg_read_file(…) is listed twice:
// as "pg_read_file" and as "pg_catalog.pg_read_file". SQL syntax that Postgres
// rewrites into function calls (EXTRACT, SUBSTRING … FROM, …) appears as the
// pg_catalog function it is parsed into.
//
// # HasWhere
//
// HasWhere is true when the top-level SELECT, UPDATE or DELETE has a WHERE
// clause, or a top-level MERGE has its join condition; false otherwise.
//
// # AST
//
// AST is the pg_query JSON parse tree of the statement, e.g.
// {"DeleteStmt": {...}}, decoded with numbers as float64. Fields holding a
// default value (false, 0, "") are absent, as in pg_query's JSON output.
//
// # Caching
//
// Parser caches results by exact query text in a bounded LRU and is safe for
// concurrent use. Cached statements are shared between callers, who must not
// modify them.
package sql
