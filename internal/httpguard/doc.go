// Package httpguard is what the control plane's listener does about clients
// before any handler trusts them: it caps the connections one address may
// hold open, times out request bodies that arrive too slowly, and finds the
// client's real address and scheme behind reverse proxies the operator
// trusts (and only behind those).
package httpguard
