package agent

import (
	"math"
	"net/url"
	"sync"

	"golang.org/x/time/rate"
)

// bandwidth shares the node's download rate (Config.NodeDownloadRate)
// fairly between the running downloads and caps the connections to one
// host (Config.DownloadHostConnections). Each download gets one limiter
// for all its connections, set to the lower of its own limit and its fair
// share: the node's rate is split max-min fair, so a download limited
// below an equal share keeps its limit and the others share the rest.
// Every start and end of a download sets the limiters again.
type bandwidth struct {
	node     float64 // bytes per second; 0: no node limit
	hostCap  int     // connections per host; 0: no cap
	mu       sync.Mutex
	shares   map[*share]struct{}
	hostConn map[string]int // connections reserved per host
}

// share is one download's part of the node's bandwidth.
type share struct {
	own     float64 // its own limit; 0: none
	host    string
	conns   int
	limiter *rate.Limiter
	// limit is what the limiter is set to; 0: unlimited. Guarded by
	// bandwidth.mu.
	limit float64
}

// burst is how many bytes a connection may take at once: small enough
// that a limit holds over a fraction of a second, large enough that a
// fast unlimited download is not slowed by the accounting.
const burst = 128 << 10

func newBandwidth(nodeRate int64, hostCap int) *bandwidth {
	return &bandwidth{node: float64(nodeRate), hostCap: hostCap, shares: map[*share]struct{}{}, hostConn: map[string]int{}}
}

// join registers a download from rawURL with its own limit (0: none)
// wanting up to conns connections. It gets as many as the host cap leaves,
// but always one.
func (b *bandwidth) join(rawURL string, own int64, conns int) *share {
	host := ""
	if u, err := url.Parse(rawURL); err == nil {
		host = u.Host
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hostCap > 0 {
		conns = max(1, min(conns, b.hostCap-b.hostConn[host]))
	}
	s := &share{own: float64(own), host: host, conns: conns, limiter: rate.NewLimiter(rate.Inf, burst)}
	b.hostConn[host] += conns
	b.shares[s] = struct{}{}
	b.rebalance()
	return s
}

// leave ends a download's share; the others get its bandwidth.
func (b *bandwidth) leave(s *share) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.shares, s)
	if b.hostConn[s.host] -= s.conns; b.hostConn[s.host] <= 0 {
		delete(b.hostConn, s.host)
	}
	b.rebalance()
}

// current is the limit s runs under now; 0: none.
func (b *bandwidth) current(s *share) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(s.limit)
}

// rebalance sets every limiter: max-min fair shares of the node's rate,
// each capped by the download's own limit. Called with b.mu held.
func (b *bandwidth) rebalance() {
	set := func(s *share, limit float64) {
		s.limit = limit
		if limit <= 0 || math.IsInf(limit, 1) {
			s.limit = 0
			s.limiter.SetLimit(rate.Inf)
			return
		}
		s.limiter.SetLimit(rate.Limit(limit))
	}
	if b.node <= 0 {
		for s := range b.shares {
			set(s, s.own)
		}
		return
	}
	left, open := b.node, make([]*share, 0, len(b.shares))
	for s := range b.shares {
		open = append(open, s)
	}
	// Water-filling: whoever wants less than an equal share of what is
	// left gets what it wants; repeat until everyone left wants more.
	for len(open) > 0 {
		fair := left / float64(len(open))
		var rest []*share
		for _, s := range open {
			if s.own > 0 && s.own <= fair {
				set(s, s.own)
				left -= s.own
			} else {
				rest = append(rest, s)
			}
		}
		if len(rest) == len(open) {
			for _, s := range rest {
				set(s, fair)
			}
			return
		}
		open = rest
	}
}
