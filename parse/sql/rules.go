package sql

import "github.com/regate/regate/parse"

// writeFields are the fields of a message whose RangeVars (the field itself
// or its list elements) a statement writes to.
var writeFields = map[[2]string]bool{
	{"InsertStmt", "relation"}:    true,
	{"UpdateStmt", "relation"}:    true,
	{"DeleteStmt", "relation"}:    true,
	{"MergeStmt", "relation"}:     true,
	{"TruncateStmt", "relations"}: true,
	{"CopyStmt", "relation"}:      true, // COPY … FROM only, see fieldAccess
	{"LockStmt", "relations"}:     true, // unless ACCESS SHARE, see fieldAccess
}

// ddlFields are the fields of a message whose RangeVars (the field itself or
// its list elements) a statement creates, alters, drops or maintains.
var ddlFields = map[[2]string]bool{
	{"CreateStmt", "relation"}:                true,
	{"CreateStmt", "inhRelations"}:            true,
	{"AlterTableStmt", "relation"}:            true,
	{"AlterTableCmd", "def"}:                  true, // INHERIT parent
	{"PartitionCmd", "name"}:                  true, // ATTACH/DETACH PARTITION
	{"IndexStmt", "relation"}:                 true,
	{"ViewStmt", "view"}:                      true,
	{"IntoClause", "rel"}:                     true, // CREATE TABLE AS, SELECT INTO
	{"CreateSeqStmt", "sequence"}:             true,
	{"AlterSeqStmt", "sequence"}:              true,
	{"CreateTrigStmt", "relation"}:            true,
	{"CreatePolicyStmt", "table"}:             true,
	{"AlterPolicyStmt", "table"}:              true,
	{"RenameStmt", "relation"}:                true,
	{"AlterObjectSchemaStmt", "relation"}:     true,
	{"AlterObjectDependsStmt", "relation"}:    true,
	{"AlterOwnerStmt", "relation"}:            true,
	{"RuleStmt", "relation"}:                  true,
	{"CompositeTypeStmt", "typevar"}:          true,
	{"CreateStatsStmt", "relations"}:          true,
	{"PublicationTable", "relation"}:          true,
	{"ColumnDef", "identitySequence"}:         true,
	{"GrantStmt", "objects"}:                  true,
	{"ImportForeignSchemaStmt", "table_list"}: true, // remote names, LIMIT TO or EXCEPT
	{"ClusterStmt", "relation"}:               true,
	{"VacuumRelation", "relation"}:            true,
	{"RefreshMatViewStmt", "relation"}:        true,
	{"ReindexStmt", "relation"}:               true,
}

// typedFields gives the message type of fields that hold a message without a
// Node wrapper, where the type matters to the rules above.
var typedFields = map[[2]string]string{
	{"SelectStmt", "larg"}:             "SelectStmt",
	{"SelectStmt", "rarg"}:             "SelectStmt",
	{"SelectStmt", "intoClause"}:       "IntoClause",
	{"CreateTableAsStmt", "into"}:      "IntoClause",
	{"CreateForeignTableStmt", "base"}: "CreateStmt",
	{"PublicationObjSpec", "pubtable"}: "PublicationTable",
	{"CallStmt", "funccall"}:           "FuncCall",
}

// lockAccessShare is LockStmt.mode of LOCK … IN ACCESS SHARE MODE.
const lockAccessShare = 1

// skipFields hold RangeVars that are not relations but references to FROM
// items already listed (FOR UPDATE OF <alias>).
var skipFields = map[[2]string]bool{
	{"LockingClause", "lockedRels"}: true,
}

// fieldAccess returns the access of the RangeVars directly in the field
// key = {message type, field name} of the message m, or "" when they are plain
// reads.
func fieldAccess(key [2]string, m map[string]any) string {
	name := key[0]
	switch {
	case ddlFields[key]:
		return parse.AccessDDL
	case !writeFields[key]:
		return ""
	case name == "CopyStmt" && !boolField(m, "is_from"):
		return parse.AccessRead
	case name == "LockStmt" && intField(m, "mode") == lockAccessShare:
		return parse.AccessRead
	}
	return parse.AccessWrite
}

// relationObjectTypes are the object types whose names are relation names.
var relationObjectTypes = map[string]bool{
	"OBJECT_TABLE":         true,
	"OBJECT_VIEW":          true,
	"OBJECT_MATVIEW":       true,
	"OBJECT_INDEX":         true,
	"OBJECT_SEQUENCE":      true,
	"OBJECT_FOREIGN_TABLE": true,
}

// special records the relations that statements name by plain name lists
// rather than RangeVars, and the names of function calls.
func (c *collector) special(name string, m map[string]any) {
	switch name {
	case "FuncCall":
		c.funcCall(m)
	case "DropdbStmt":
		c.addRelation(-1, parse.Relation{Name: stringField(m, "dbname"), Access: parse.AccessDDL})
	case "DropStmt":
		objs, _ := m["objects"].([]any)
		for _, o := range objs {
			c.namedObject(stringField(m, "removeType"), o)
		}
	case "CommentStmt", "SecLabelStmt":
		c.namedObject(stringField(m, "objtype"), m["object"])
	case "GrantStmt":
		objtype := stringField(m, "objtype")
		if stringField(m, "targtype") == "ACL_TARGET_ALL_IN_SCHEMA" {
			objtype = "OBJECT_SCHEMA"
		}
		objs, _ := m["objects"].([]any)
		for _, o := range objs {
			c.namedObject(objtype, o)
		}
	}
}

// namedObject records the relation, schema or database an object name of the
// given object type stands for, as a ddl access.
func (c *collector) namedObject(objtype string, obj any) {
	parts := stringList(obj)
	if objtype == "OBJECT_COLUMN" && len(parts) >= 2 {
		parts, objtype = parts[:len(parts)-1], "OBJECT_TABLE"
	}
	switch {
	case len(parts) == 0:
	case relationObjectTypes[objtype]:
		r := parse.Relation{Name: parts[len(parts)-1], Access: parse.AccessDDL}
		if len(parts) >= 2 {
			r.Schema = parts[len(parts)-2]
		}
		c.addRelation(-1, r)
	case (objtype == "OBJECT_SCHEMA" || objtype == "OBJECT_DATABASE") && len(parts) == 1:
		c.addRelation(-1, parse.Relation{Name: parts[0], Access: parse.AccessDDL})
	}
}
