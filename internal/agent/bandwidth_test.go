package agent

import "testing"

func TestBandwidthShares(t *testing.T) {
	const mib = 1 << 20
	b := newBandwidth(100*mib, 8)
	a := b.join("https://mirror.example/a.img", 0, 4)
	if got := b.current(a); got != 100*mib {
		t.Fatalf("alone: %d; want the node's whole rate", got)
	}
	slow := b.join("https://mirror.example/b.img", 10*mib, 4)
	c := b.join("https://other.example/c.img", 0, 4)
	// Max-min fair: the download limited below an equal share keeps its
	// limit, the other two share the rest.
	for s, want := range map[*share]int64{a: 45 * mib, slow: 10 * mib, c: 45 * mib} {
		if got := b.current(s); got != want {
			t.Errorf("share %d; want %d", got, want)
		}
	}
	// The host cap: 8 connections to mirror.example, a and slow hold them.
	if a.conns != 4 || slow.conns != 4 || c.conns != 4 {
		t.Fatalf("connections %d, %d, %d; want 4 each", a.conns, slow.conns, c.conns)
	}
	d := b.join("https://mirror.example/d.img", 0, 4)
	if d.conns != 1 {
		t.Fatalf("a third download from a host at its cap got %d connections; want 1", d.conns)
	}
	b.leave(d)
	b.leave(a)
	b.leave(c)
	if got := b.current(slow); got != 10*mib {
		t.Fatalf("alone again: %d; want its own limit", got)
	}
	if e := b.join("https://mirror.example/e.img", 0, 4); e.conns != 4 {
		t.Fatalf("after the others left: %d connections; want 4", e.conns)
	}

	none := newBandwidth(0, 8)
	x := none.join("https://mirror.example/x.img", 0, 4)
	y := none.join("https://mirror.example/y.img", 5*mib, 4)
	if none.current(x) != 0 || none.current(y) != 5*mib {
		t.Fatalf("without a node limit: %d, %d; want none and the download's own", none.current(x), none.current(y))
	}
}
