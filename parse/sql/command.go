package sql

import "strings"

// commands maps a statement node type to its Command when the Command does
// not depend on the statement's fields (see command for those that do).
var commands = map[string]string{
	"SelectStmt": "SELECT",
	"InsertStmt": "INSERT",
	"UpdateStmt": "UPDATE",
	"DeleteStmt": "DELETE",
	"MergeStmt":  "MERGE",
	"CopyStmt":   "COPY",

	"CreateStmt":              "CREATE",
	"CreateAmStmt":            "CREATE",
	"CreateCastStmt":          "CREATE",
	"CreateConversionStmt":    "CREATE",
	"CreateDomainStmt":        "CREATE",
	"CreateEnumStmt":          "CREATE",
	"CreateEventTrigStmt":     "CREATE",
	"CreateExtensionStmt":     "CREATE",
	"CreateFdwStmt":           "CREATE",
	"CreateForeignServerStmt": "CREATE",
	"CreateForeignTableStmt":  "CREATE",
	"CreateFunctionStmt":      "CREATE",
	"CreateOpClassStmt":       "CREATE",
	"CreateOpFamilyStmt":      "CREATE",
	"CreatePLangStmt":         "CREATE",
	"CreatePolicyStmt":        "CREATE",
	"CreatePublicationStmt":   "CREATE",
	"CreateRangeStmt":         "CREATE",
	"CreateRoleStmt":          "CREATE",
	"CreateSchemaStmt":        "CREATE",
	"CreateSeqStmt":           "CREATE",
	"CreateStatsStmt":         "CREATE",
	"CreateSubscriptionStmt":  "CREATE",
	"CreateTableSpaceStmt":    "CREATE",
	"CreateTransformStmt":     "CREATE",
	"CreateTrigStmt":          "CREATE",
	"CreateUserMappingStmt":   "CREATE",
	"CreatedbStmt":            "CREATE",
	"CompositeTypeStmt":       "CREATE",
	"DefineStmt":              "CREATE",
	"IndexStmt":               "CREATE",
	"RuleStmt":                "CREATE",
	"ViewStmt":                "CREATE",

	"AlterCollationStmt":           "ALTER",
	"AlterDatabaseRefreshCollStmt": "ALTER",
	"AlterDatabaseSetStmt":         "ALTER",
	"AlterDatabaseStmt":            "ALTER",
	"AlterDefaultPrivilegesStmt":   "ALTER",
	"AlterDomainStmt":              "ALTER",
	"AlterEnumStmt":                "ALTER",
	"AlterEventTrigStmt":           "ALTER",
	"AlterExtensionContentsStmt":   "ALTER",
	"AlterExtensionStmt":           "ALTER",
	"AlterFdwStmt":                 "ALTER",
	"AlterForeignServerStmt":       "ALTER",
	"AlterFunctionStmt":            "ALTER",
	"AlterObjectDependsStmt":       "ALTER",
	"AlterObjectSchemaStmt":        "ALTER",
	"AlterOpFamilyStmt":            "ALTER",
	"AlterOperatorStmt":            "ALTER",
	"AlterOwnerStmt":               "ALTER",
	"AlterPolicyStmt":              "ALTER",
	"AlterPublicationStmt":         "ALTER",
	"AlterRoleSetStmt":             "ALTER",
	"AlterRoleStmt":                "ALTER",
	"AlterSeqStmt":                 "ALTER",
	"AlterStatsStmt":               "ALTER",
	"AlterSubscriptionStmt":        "ALTER",
	"AlterSystemStmt":              "ALTER",
	"AlterTSConfigurationStmt":     "ALTER",
	"AlterTSDictionaryStmt":        "ALTER",
	"AlterTableMoveAllStmt":        "ALTER",
	"AlterTableSpaceOptionsStmt":   "ALTER",
	"AlterTableStmt":               "ALTER",
	"AlterTypeStmt":                "ALTER",
	"AlterUserMappingStmt":         "ALTER",
	"RenameStmt":                   "ALTER",
	"ReplicaIdentityStmt":          "ALTER",
	"DropStmt":                     "DROP",
	"DropOwnedStmt":                "DROP",
	"DropRoleStmt":                 "DROP",
	"DropSubscriptionStmt":         "DROP",
	"DropTableSpaceStmt":           "DROP",
	"DropUserMappingStmt":          "DROP",
	"DropdbStmt":                   "DROP",
	"TruncateStmt":                 "TRUNCATE",
	"ImportForeignSchemaStmt":      "IMPORT",
	"ReassignOwnedStmt":            "REASSIGN",
	"SecLabelStmt":                 "SECURITY LABEL",
	"CommentStmt":                  "COMMENT",
	"VariableShowStmt":             "SHOW",
	"ConstraintsSetStmt":           "SET",
	"ExplainStmt":                  "EXPLAIN",
	"DoStmt":                       "DO",
	"CallStmt":                     "CALL",
	"PrepareStmt":                  "PREPARE",
	"ExecuteStmt":                  "EXECUTE",
	"DeallocateStmt":               "DEALLOCATE",
	"ListenStmt":                   "LISTEN",
	"NotifyStmt":                   "NOTIFY",
	"UnlistenStmt":                 "UNLISTEN",
	"LockStmt":                     "LOCK",
	"DiscardStmt":                  "DISCARD",
	"RefreshMatViewStmt":           "REFRESH",
	"ReindexStmt":                  "REINDEX",
	"ClusterStmt":                  "CLUSTER",
	"CheckPointStmt":               "CHECKPOINT",
	"ClosePortalStmt":              "CLOSE",
	"DeclareCursorStmt":            "DECLARE",
	"LoadStmt":                     "LOAD",
}

// transactionCommands maps TransactionStmt.kind to Command.
var transactionCommands = map[string]string{
	"TRANS_STMT_BEGIN":             "BEGIN",
	"TRANS_STMT_START":             "BEGIN",
	"TRANS_STMT_COMMIT":            "COMMIT",
	"TRANS_STMT_ROLLBACK":          "ROLLBACK",
	"TRANS_STMT_SAVEPOINT":         "SAVEPOINT",
	"TRANS_STMT_RELEASE":           "RELEASE",
	"TRANS_STMT_ROLLBACK_TO":       "ROLLBACK",
	"TRANS_STMT_PREPARE":           "PREPARE TRANSACTION",
	"TRANS_STMT_COMMIT_PREPARED":   "COMMIT PREPARED",
	"TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}

// command returns the Command of a top-level statement {node: body}.
func command(node string, body map[string]any) string {
	switch node {
	case "GrantStmt", "GrantRoleStmt":
		return pick(boolField(body, "is_grant"), "GRANT", "REVOKE")
	case "VariableSetStmt":
		kind := stringField(body, "kind")
		return pick(kind == "VAR_RESET" || kind == "VAR_RESET_ALL", "RESET", "SET")
	case "VacuumStmt":
		return pick(boolField(body, "is_vacuumcmd"), "VACUUM", "ANALYZE")
	case "FetchStmt":
		return pick(boolField(body, "ismove"), "MOVE", "FETCH")
	case "CreateTableAsStmt":
		return pick(boolField(body, "is_select_into"), "SELECT", "CREATE")
	case "TransactionStmt":
		if c, ok := transactionCommands[stringField(body, "kind")]; ok {
			return c
		}
		return "TRANSACTION"
	}
	if c, ok := commands[node]; ok {
		return c
	}
	return fallbackCommand(node)
}

// fallbackCommand names a statement node type the table does not know.
func fallbackCommand(node string) string {
	switch {
	case strings.HasPrefix(node, "Create"):
		return "CREATE"
	case strings.HasPrefix(node, "Alter"):
		return "ALTER"
	case strings.HasPrefix(node, "Drop"):
		return "DROP"
	}
	if c := strings.ToUpper(strings.TrimSuffix(node, "Stmt")); c != "" {
		return c
	}
	return "UNKNOWN"
}

func pick(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

// boolField returns m[key] as a bool; absent (pg_query omits false) is false.
func boolField(m map[string]any, key string) bool {
	b, _ := m[key].(bool)
	return b
}

// stringField returns m[key] as a string; absent is "".
func stringField(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// intField returns m[key] as an int; absent (pg_query omits 0) is 0.
func intField(m map[string]any, key string) int {
	f, _ := m[key].(float64)
	return int(f)
}
