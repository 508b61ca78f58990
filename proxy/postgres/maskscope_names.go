package postgres

import "strings"

// The scopes of the column-mask check (maskscope.go): what names mean in one
// select, and in the selects around it.

// scope is what names mean in one select: the names that carry masked values,
// the names of its FROM items (a bare one in a select list is a whole-row
// value) and its WITH queries.
type scope struct {
	tainted taint
	items   map[string]bool
	// clean: the items whose whole row holds no masked or tainted column (a
	// subquery or WITH query whose select list names none).
	clean map[string]bool
	ctes  map[string]taint // WITH query name -> its tainted output names
	// funcs: the items that are functions in FROM; funcItems: there is one.
	funcs     map[string]bool
	funcItems bool
	// hidden: the names under which an item returns masked values that no
	// mask matches by name (a database function's result columns, a
	// statistics view's sample values), with where they come from.
	hidden map[string]hiddenBy
	outer  *scope
}

// hiddenBy is where a name that carries masked values under a name of its
// own comes from (a database function in FROM, a statistics view), for a
// refusal's text.
type hiddenBy struct {
	column string // the masked column ("": any)
	via    string // "through …"
}

// hide records where the name n comes from (scope.hidden).
func (s *scope) hide(n, column, via string) {
	if s.hidden == nil {
		s.hidden = map[string]hiddenBy{}
	}
	s.hidden[n] = hiddenBy{column, via}
}

// hiddenName returns where n comes from when it is one of the names in
// scope.hidden.
func (s *scope) hiddenName(n string) (hiddenBy, bool) {
	for ; s != nil; s = s.outer {
		if h, ok := s.hidden[n]; ok {
			return h, true
		}
	}
	return hiddenBy{}, false
}

// escapeHidden words the refusal of a name n that carries masked values
// (how): through a function's result column or a statistics view's column,
// when n is one (then a generic how, which says only that n has no source,
// is left out).
func (c *maskCheck) escapeHidden(sc *scope, n, how string, generic bool) *maskEscape {
	if h, ok := sc.hiddenName(n); ok {
		if generic {
			return c.escape(h.column, h.via)
		}
		return c.escape(h.column, h.via+", "+how)
	}
	return c.escape(n, how)
}

// fromFunction reports whether the column reference f may name a column of
// a function in FROM: qualified by such an item, or unqualified where one is
// in scope.
func (s *scope) fromFunction(f []string) bool {
	if len(f) >= 2 {
		q := strings.ToLower(f[len(f)-2])
		for ; s != nil; s = s.outer {
			if s.items[q] {
				return s.funcs[q]
			}
		}
		return false
	}
	for ; s != nil; s = s.outer {
		if s.funcItems {
			return true
		}
	}
	return false
}

// lookup reports whether n carries a masked value in s or a scope around it,
// and whether that value is sourceless.
func (s *scope) lookup(n string) (tainted, sourceless bool) {
	for ; s != nil; s = s.outer {
		if v, ok := s.tainted[n]; ok {
			return true, v
		}
	}
	return false, false
}

func (s *scope) isItem(n string) bool {
	for ; s != nil; s = s.outer {
		if s.items[n] {
			return true
		}
	}
	return false
}

// wholeRowClean reports whether the item n names, in the innermost scope
// that has it, is clean.
func (s *scope) wholeRowClean(n string) bool {
	for ; s != nil; s = s.outer {
		if s.items[n] {
			return s.clean[n]
		}
	}
	return false
}

func (s *scope) cte(n string) (taint, bool) {
	for ; s != nil; s = s.outer {
		if t, ok := s.ctes[n]; ok {
			return t, true
		}
	}
	return nil, false
}
