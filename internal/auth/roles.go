package auth

import "github.com/quarry-project/quarry/internal/store"

// rank orders roles: each includes everything the ones below may do.
var rank = map[store.Role]int{store.RoleViewer: 1, store.RoleOperator: 2, store.RoleAdmin: 3}

// Allows reports whether a token with role have may do what need requires.
func Allows(have, need store.Role) bool {
	return rank[have] > 0 && rank[have] >= rank[need]
}

// ValidRole reports whether r is a known role.
func ValidRole(r store.Role) bool { return rank[r] > 0 }
