package recorder

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestIDFilter: no ID added is ever reported absent (across the growth of the
// filter), and few others are reported present.
func TestIDFilter(t *testing.T) {
	var f idFilter
	f.size(1000)
	const n = 300000 // several filters: the first holds 65536
	for i := range n {
		f.add(fmt.Sprintf("in-%d", i))
	}
	f.ready.Store(true)
	if len(f.blooms) < 3 {
		t.Errorf("%d filters for %d IDs, want it to have grown", len(f.blooms), n)
	}
	for i := range n {
		if id := fmt.Sprintf("in-%d", i); !f.mayContain(id) {
			t.Fatalf("%s was added but is reported absent", id)
		}
	}
	fp := 0
	for i := range 100000 {
		if f.mayContain(fmt.Sprintf("out-%d", i)) {
			fp++
		}
	}
	// The first filter errs below 1% when full, each later one less (more
	// bits per ID), so the sum stays near 2% (measured: 1.4% here, 1.6% with
	// five filters for 1.2 million IDs, where equal filters gave 3.2%).
	if fp > 2500 {
		t.Errorf("%d of 100000 absent IDs reported present", fp)
	}
	var empty idFilter
	if !empty.mayContain("x") {
		t.Error("a filter not loaded yet reports an ID absent")
	}
}

// TestDuplicateOfStoredID: after a reopen, an ID stored before is refused
// once the filter has loaded the database's IDs (it is looked up, not
// assumed new), and new IDs are accepted.
func TestDuplicateOfStoredID(t *testing.T) {
	s, path := openTemp(t, "")
	appendAll(t, s, []*Event{{ID: "old-1", Type: TypeCommand}, {ID: "old-2", Type: TypeCommand}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openPath(t, path, "")
	waitFor(t, 5*time.Second, "the ID filter to load", s2.filter.ready.Load)
	if err := s2.Append(context.Background(), &Event{ID: "old-2", Type: TypeCommand}); !errors.Is(err, ErrDuplicateID) {
		t.Errorf("Append of a stored ID = %v, want ErrDuplicateID", err)
	}
	appendAll(t, s2, []*Event{{ID: "new-1", Type: TypeCommand}})
	if res := mustVerify(t, s2); !res.OK || res.Events != 3 {
		t.Errorf("Verify = %+v, want OK with 3 events", res)
	}
}
