package store

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/quarry-project/quarry/internal/errclass"
)

// ErrInvalid: the request is wrong (a page size out of bounds, a page
// token that is not one the store gave out, or was given with other
// filters); the message says what to fix.
var ErrInvalid = errclass.New(errclass.InvalidArgument, "invalid argument")

// Page sizes of every paged list.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Page asks for one page of a list.
//
// Lists are paged by keyset, not by offset: a token holds the sort key of
// the last row handed out, and the next page starts after it, in an order
// that is unique and built from keys a row keeps. So a row present for the
// whole walk through a list is returned exactly once, whatever is inserted
// or deleted meanwhile, and a token needs no memory on the server: any
// store over the same database (any control-plane replica) continues it.
type Page struct {
	// Size is the most rows the page holds: 0 means DefaultPageSize, more
	// than MaxPageSize or negative is ErrInvalid.
	Size int
	// Token is the NextToken of the previous page, given with the same
	// filter; "" starts at the first row.
	Token string
}

// Limit returns the page's size, or ErrInvalid.
func (p Page) Limit() (int, error) {
	switch {
	case p.Size < 0:
		return 0, fmt.Errorf("page_size %d is negative; give 1 to %d, or 0 for %d: %w", p.Size, MaxPageSize, DefaultPageSize, ErrInvalid)
	case p.Size == 0:
		return DefaultPageSize, nil
	case p.Size > MaxPageSize:
		return 0, fmt.Errorf("page_size %d is more than %d; ask for at most %d rows a page and follow next_page_token: %w",
			p.Size, MaxPageSize, MaxPageSize, ErrInvalid)
	}
	return p.Size, nil
}

// Cursor is the sort key of the last row of a page, the position the next
// page starts after. Each list decides what its strings and numbers are.
type Cursor struct {
	Strings []string `json:"s,omitempty"`
	Ints    []int64  `json:"n,omitempty"`
}

// token is what a page token encodes.
type token struct {
	Version int    `json:"v"`
	List    string `json:"l"`
	// Filter is a digest of the filter the list was asked with: a token
	// given with other filters would start in the wrong place.
	Filter string `json:"f"`
	Cursor
}

// EncodeToken returns the opaque token that continues list (a name such as
// "images") after c. filter is the list's filter in any form that prints
// the same for equal filters (fmt's %+v of a struct does).
func EncodeToken(list string, filter any, c Cursor) string {
	b, err := json.Marshal(token{Version: 1, List: list, Filter: filterDigest(filter), Cursor: c})
	if err != nil {
		panic(err) // strings and integers always marshal
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeToken returns the cursor of a token EncodeToken made for the same
// list and filter, with strings and ints strings and numbers, or
// ErrInvalid; "" is the zero Cursor (start at the first row).
func DecodeToken(list string, filter any, tok string, strings, ints int) (Cursor, error) {
	if tok == "" {
		return Cursor{}, nil
	}
	const again = "start again without page_token"
	b, err := base64.RawURLEncoding.DecodeString(tok)
	var t token
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	switch {
	case err != nil || t.Version != 1:
		return Cursor{}, fmt.Errorf("page_token is not a token this server gave out (copy next_page_token whole), or is from an older version; %s: %w", again, ErrInvalid)
	case t.List != list:
		return Cursor{}, fmt.Errorf("page_token continues the list of %s, not of %s; %s: %w", t.List, list, again, ErrInvalid)
	case t.Filter != filterDigest(filter):
		return Cursor{}, fmt.Errorf("page_token was made with other filters: ask with the filters of the first page, or %s: %w", again, ErrInvalid)
	case len(t.Strings) != strings || len(t.Ints) != ints:
		return Cursor{}, fmt.Errorf("page_token is not a token this server gave out (copy next_page_token whole); %s: %w", again, ErrInvalid)
	}
	return t.Cursor, nil
}

func filterDigest(filter any) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%+v", filter))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}
