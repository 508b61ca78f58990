package sql

import (
	"strconv"
	"testing"
)

const benchQuery = `WITH recent AS (SELECT uid FROM orders WHERE created > now() - interval '1 day')
SELECT u.id, u.name, count(*) FROM public.users u JOIN recent r ON r.uid = u.id
WHERE u.active AND u.id NOT IN (SELECT uid FROM bans) GROUP BY u.id, u.name ORDER BY 3 DESC LIMIT 10`

func BenchmarkParse(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		p := NewParser(0)
		if _, err := p.Parse(benchQuery); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Parse(benchQuery); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		// Every text differs from the previous one and the cache holds a
		// single entry, so every call misses the cache.
		p := NewParser(1)
		queries := make([]string, 1024)
		for i := range queries {
			queries[i] = benchQuery + " -- " + strconv.Itoa(i)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := p.Parse(queries[i%len(queries)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
