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
// Load reads local bundles. A signed local bundle (.signatures.json) fails to
// load, because Load has no verification key: OPA refuses to read one
// without, and regate does not skip verification silently. Signed bundles
// come from bundle services (Source), where the OPA configuration names the
// keys.
//
// Source is where the active bundles come from at run time: OPA's plugin
// manager with the local bundles activated at start and, when the OPA
// configuration asks for it, OPA's bundle plugin downloading, verifying,
// compiling and activating bundles from bundle services. Source reports each
// activation (OnActivate) and each bundle's status; it never evaluates a
// decision (package policies does).
package bundles
