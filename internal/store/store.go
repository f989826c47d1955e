// Package store keeps the control plane's durable state behind one interface.
//
// Implementations (SQLite by default, PostgreSQL for several control-plane
// replicas) run the same versioned migrations and pass the same conformance
// suite in package storetest. Errors are classed by wrapping the sentinels
// below with %w; callers test them with errors.Is. Each sentinel is of an
// errclass class, so the API answers them without knowing the store.
package store

import (
	"context"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
)

var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errclass.New(errclass.NotFound, "not found")
	// ErrConflict: a record with the same unique key (name, path) exists,
	// or the record changed since it was read.
	ErrConflict = errclass.New(errclass.Conflict, "already exists")
	// ErrInUse: the record is referenced by another and cannot be removed.
	ErrInUse = errclass.New(errclass.FailedPrecondition, "in use")
)

// NodeState mirrors quarry.v1.NodeState.
type NodeState string

const (
	NodeReady       NodeState = "READY"
	NodeUnreachable NodeState = "UNREACHABLE"
	NodeUnknown     NodeState = "UNKNOWN"
)

// Node is a registered hypervisor host.
type Node struct {
	ID      string
	Name    string
	Address string // normalized host:port
	// Status, written by the node link after each health check.
	State         NodeState
	StateReason   string
	StateSince    time.Time
	LastCheckedAt time.Time // zero: never checked
	// MountsSeenAt is when a check last reported the node's pools; zero:
	// never. A mount was last found as recorded at the later of this and
	// its own CheckedAt.
	MountsSeenAt time.Time
	Hostname     string
	AgentVersion string
	CreatedAt    time.Time
	// Certificate is zero until the node's agent enrolls.
	Certificate NodeCertificate
}

// NodeCertificate is what the control plane remembers of the certificate
// it signed for a node's agent.
type NodeCertificate struct {
	Serial string // hex
	// KeyHash is the hex SHA-256 of the certificate's public key (its
	// SubjectPublicKeyInfo); "" for certificates recorded before it was kept.
	KeyHash  string
	NotAfter time.Time
	IssuedAt time.Time
}

// Enrollment is what one enrollment writes, all or nothing: a use of the
// join token, the node (created, or moved to its address) and the
// certificate its agent now holds.
type Enrollment struct {
	TokenID string
	UsedAt  time.Time
	// Node is created when Create is set; otherwise the node of Node.ID
	// gets Node.Address.
	Node   Node
	Create bool
	Cert   NodeCertificate
	// PreviousSerial is the certificate serial the node had when the
	// enrollment was decided ("" for none): if another enrollment or a
	// revocation changed it since, this one fails with ErrConflict.
	PreviousSerial string
}

// NodeFilter selects nodes; zero fields match everything.
type NodeFilter struct {
	State NodeState
	// Search matches nodes whose name, address, hostname, agent version or
	// state reason contains it; ASCII letters match either case.
	Search string
}

// NodeStatus is what one health check learned about a node.
type NodeStatus struct {
	State         NodeState
	StateReason   string
	StateSince    time.Time
	LastCheckedAt time.Time
	Hostname      string
	AgentVersion  string
}

// Pool is a storage pool: a directory where images live.
type Pool struct {
	ID              string
	Name            string
	Type            string // "dir"
	Path            string // absolute
	Shared          bool
	AssignedNodeIDs []string // preference order
	InitializedBy   string   // node that wrote the identity marker; "" until one did
	CreatedAt       time.Time
}

// PoolMount is one node's view of one pool, as of its last successful check.
type PoolMount struct {
	NodeID     string
	PoolID     string
	Mounted    bool
	Reason     string // why not mounted
	FreeBytes  uint64
	TotalBytes uint64
	CheckedAt  time.Time
}

// PoolUsage sums up the nodes' views of one pool: how many mount it, and
// the least free and the most total bytes among them.
type PoolUsage struct {
	PoolID       string
	MountedNodes int
	FreeBytes    uint64
	TotalBytes   uint64
}

// Store is the control plane's state, composed of one role interface per
// kind of record. Every method is safe for concurrent use.
type Store interface {
	NodeStore
	PoolStore
	ImageStore
	JobStore
	TokenStore
	AuditStore
	LeaseStore
	SecretStore
	CatalogStore

	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	Close() error
}

// NodeStore keeps nodes and their health.
type NodeStore interface {
	// CreateNode inserts n; ErrConflict when the name or address is taken.
	CreateNode(ctx context.Context, n Node) error
	GetNode(ctx context.Context, id string) (Node, error)
	// GetNodeByName returns ErrNotFound when no node has that name.
	GetNodeByName(ctx context.Context, name string) (Node, error)
	// GetNodeByAddress returns ErrNotFound when no node has that
	// management address.
	GetNodeByAddress(ctx context.Context, address string) (Node, error)
	// ListNodes returns every node ordered by name.
	ListNodes(ctx context.Context) ([]Node, error)
	// NodeIDs returns every node's id, in no particular order: what the
	// health loop reads to meet every node, without their records.
	NodeIDs(ctx context.Context) ([]string, error)
	// GetNodes returns the nodes with these ids (those that exist, once
	// each) ordered by name.
	GetNodes(ctx context.Context, ids ...string) ([]Node, error)
	// ListNodesPage returns one page of the nodes matching f, ordered by
	// name, and the token of the next page ("" after the last).
	ListNodesPage(ctx context.Context, f NodeFilter, p Page) ([]Node, string, error)
	// UpdateNode renames a node and sets its management address;
	// ErrConflict when another node has the name or address.
	UpdateNode(ctx context.Context, id, name, address string) error
	// DeleteNode removes the node and its pool mounts; ErrInUse when a pool
	// still lists it among its assigned nodes.
	DeleteNode(ctx context.Context, id string) error
	// RecordNodeCheck stores the outcome of one health check in one
	// transaction. mounts == nil keeps the previous mounts (a failed check
	// learns nothing about pools); otherwise they replace the node's mounts,
	// except that a mount found exactly as recorded keeps its row, and its
	// CheckedAt (when it was last found otherwise), and sets the node's
	// MountsSeenAt to st.LastCheckedAt.
	RecordNodeCheck(ctx context.Context, nodeID string, st NodeStatus, mounts []PoolMount) error
	// SetNodeCertificate records the certificate the node's agent holds
	// (after enrollment or renewal).
	SetNodeCertificate(ctx context.Context, nodeID string, c NodeCertificate) error
	// Enroll records an enrollment in one transaction: the token's use (a
	// used single-use token is ErrConflict), the node and its certificate.
	// When it fails nothing is written, so the token is not spent.
	Enroll(ctx context.Context, e Enrollment) error
}

// PoolStore keeps storage pools and every node's view of them.
type PoolStore interface {
	// CreatePool inserts p; ErrConflict when the name or path is taken,
	// ErrNotFound when an assigned node does not exist.
	CreatePool(ctx context.Context, p Pool) error
	GetPool(ctx context.Context, id string) (Pool, error)
	GetPoolByName(ctx context.Context, name string) (Pool, error)
	// ListPools returns every pool ordered by name.
	ListPools(ctx context.Context) ([]Pool, error)
	// PoolNames returns the names of the pools with these ids, by id; ids
	// of no pool are left out.
	PoolNames(ctx context.Context, ids ...string) (map[string]string, error)
	// PoolsAssignedTo returns, for each of the nodes with nodeIDs that a
	// pool lists among its assigned nodes, the ids of those pools.
	PoolsAssignedTo(ctx context.Context, nodeIDs ...string) (map[string][]string, error)
	// UpdatePool replaces name, shared and assigned nodes of the pool with
	// p.ID. Path, type and creation time do not change.
	UpdatePool(ctx context.Context, p Pool) error
	// MarkPoolInitialized records the node that wrote the marker. It succeeds
	// only once per pool: ErrConflict when another node already did.
	MarkPoolInitialized(ctx context.Context, poolID, nodeID string) error
	// DeletePool removes the pool, its mounts and its finished jobs;
	// ErrInUse while images remain in it or a job in it is active.
	DeletePool(ctx context.Context, id string) error

	// ListPoolMounts returns every node's view of the pools with poolIDs
	// (none given: of every pool), ordered by pool then node.
	ListPoolMounts(ctx context.Context, poolIDs ...string) ([]PoolMount, error)
	// ListNodeMounts returns the mounts of the nodes with nodeIDs (none:
	// none) ordered by node, then pool.
	ListNodeMounts(ctx context.Context, nodeIDs ...string) ([]PoolMount, error)
	// PoolUsages sums up the mounts of every pool a node reported on,
	// ordered by pool, without reading them.
	PoolUsages(ctx context.Context) ([]PoolUsage, error)
}
