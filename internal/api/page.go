package api

import "github.com/quarry-project/quarry/internal/store"

// pagedRequest is every List request that pages.
type pagedRequest interface {
	GetPageSize() int32
	GetPageToken() string
}

// pageOf is the page a request asks for; the store checks its bounds and
// its token, so every list answers them alike.
func pageOf(r pagedRequest) store.Page {
	return store.Page{Size: int(r.GetPageSize()), Token: r.GetPageToken()}
}

// enumKey returns the store value that m maps to v, or the zero value.
func enumKey[K comparable, V comparable](m map[K]V, v V) K {
	for k, mv := range m {
		if mv == v {
			return k
		}
	}
	var zero K
	return zero
}
