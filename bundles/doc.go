// Package bundles loads the Rego policy bundles regate evaluates.
//
// A bundle is read with OPA's own bundle and loader code, so it follows the
// OPA bundle format exactly:
//
//   - a directory tree, or a gzipped tarball (.tar.gz or .tgz) as built by
//     `opa build`;
//   - every *.rego file is a policy module, including *_test.rego files (OPA
//     keeps tests in bundles too; they are compiled but never evaluated by a
//     decision);
//   - only files named data.json, data.yaml or data.yml are data, placed at the
//     path of the directory that holds them; every other file is ignored;
//   - an optional .manifest (JSON) gives the revision, roots and rego_version.
//
// Modules are parsed as Rego v1 (`if`, `contains`) unless the manifest sets
// rego_version 0 for them. A bundle without a .manifest, or whose .manifest has
// no revision, has the revision "" (empty): callers that show revisions should
// say so rather than invent one.
//
// Signed bundles (.signatures.json) are not supported: OPA refuses to read one
// without a verification key, and regate configures none, so Load fails for
// them rather than silently skipping verification.
package bundles
