package nodelink

// CheckSlots exposes checkSlots to the tests.
var CheckSlots = checkSlots

// OpenConns is how many network connections l holds open to the node.
func OpenConns(l *Link, nodeID string) int {
	l.mu.Lock()
	c := l.conns[nodeID]
	l.mu.Unlock()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// KicksPending is how many kicks the health loop of l has yet to take (a
// kick of every node counts one).
func KicksPending(l *Link) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.kicked)
	if l.kickAll {
		n++
	}
	return n
}
