package sql

import (
	"container/list"
	"sync"

	"github.com/regate/regate/parse"
)

// lru is a fixed-capacity least-recently-used cache of parse results keyed by
// query text. It is safe for concurrent use.
type lru struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *lruEntry, most recently used first
	items map[string]*list.Element
}

type lruEntry struct {
	query string
	stmts []parse.Statement
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), items: make(map[string]*list.Element)}
}

// get returns the cached statements of query and marks them recently used.
func (c *lru) get(query string) ([]parse.Statement, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[query]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry).stmts, true
}

// add caches the statements of query, evicting the least recently used entry
// when the cache is full.
func (c *lru) add(query string, stmts []parse.Statement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[query]; ok {
		el.Value.(*lruEntry).stmts = stmts
		c.order.MoveToFront(el)
		return
	}
	c.items[query] = c.order.PushFront(&lruEntry{query: query, stmts: stmts})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry).query)
	}
}

// len returns the number of cached entries.
func (c *lru) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
