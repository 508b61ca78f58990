package policies

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sync"
)

// DefaultBundleName is the name of the embedded default library in
// Decision.Bundles.
const DefaultBundleName = "regate-default"

//go:embed *.rego regate/postgres/data.json
var library embed.FS

// Default returns the embedded default Rego library: regate.rego,
// postgres.rego and their tests at the root of the file system, and the
// library's data in regate/postgres/data.json (data.regate.postgres).
func Default() fs.FS {
	return library
}

// defaultRevision is "builtin-" and the first 12 hex digits of the sha256
// of the library's file contents, concatenated in file name order.
var defaultRevision = sync.OnceValues(func() (string, error) {
	return fsRevision(library)
})

// fsRevision hashes the contents of every regular file of fsys in lexical
// path order (the order fs.WalkDir visits them).
func fsRevision(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		_, err = h.Write(data)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("hash default library: %w", err)
	}
	return "builtin-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}
