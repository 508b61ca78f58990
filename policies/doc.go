// Package policies is regate's policy engine: it evaluates a Rego bundle with
// Open Policy Agent for every request and turns the result into a
// decision.Decision, and it embeds the default Rego library used when no
// bundle is configured.
//
// # The decision contract (v1)
//
// Decide evaluates one document, data.regate.decision unless configured
// otherwise, with the request (parse.Input) as input. The document must be an
// object:
//
//	{"allow": true|false,
//	 "reasons": ["..."],
//	 "approval": {"groups": ["dba"], "reason": "..."},
//	 "mask": [{"column": "email"}, {"field": "ssn", "with": "***"}, {"detector": "iban"}]}
//
// The decision allows only when evaluation succeeded, "allow" is the boolean
// true and every other field is well formed. Everything else denies, with
// Decision.Error set and a reason saying why:
//
//   - the document is undefined: "policy returned no decision at data.regate.decision";
//   - evaluation failed (including a canceled ctx, a conflict between rule
//     values, and builtin errors such as a division by zero, which regate
//     treats as errors rather than as undefined): "policy evaluation failed: …";
//   - the document is not an object, or "allow" is missing or not a boolean:
//     "decision has no boolean \"allow\" (got string)";
//   - "reasons" is not an array (or set) of strings: a non-string reason is
//     never converted, the decision denies and says which reason is wrong;
//   - "approval" is present (and not null) but is not an object with a
//     non-empty "groups" array of non-empty strings and an optional string
//     "reason";
//   - "mask" is present (and not null) but is not an array (or set) of objects
//     with exactly one non-empty "column", "field" or "detector" string and an
//     optional string "with".
//
// Unknown keys inside an approval or a mask entry deny too: an obligation
// regate does not understand is one it cannot honour, and it must not be
// dropped silently. Unknown top-level keys are allowed and kept in
// Decision.Result. Reasons keep the order of an array; a set is returned
// sorted. Reasons are kept when "allow" is true.
//
// # Bundles
//
// Exactly one bundle is active: the one named by Config.Bundle (a directory or
// .tar.gz, named after the base name of its path, revision from its .manifest)
// or, when none is configured, the embedded default library, named
// "regate-default" with revision "builtin-" followed by the first 12 hex
// digits of the sha256 of its files' contents in name order. A configured
// bundle replaces the default library entirely; see regate.rego (Default())
// for how to extend it.
package policies
