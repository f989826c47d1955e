package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/poolfs"
)

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(name))
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeMarkerFile(t *testing.T, poolDir, id, name string) {
	t.Helper()
	b, _ := json.Marshal(poolfs.Marker{ID: id, Name: name, CreatedAt: "2024-01-02T03:04:05Z", InitializedBy: "elsewhere"})
	writeFile(t, filepath.Join(poolDir, poolfs.MarkerPath), string(b))
}

func ref(id, p string) *agentv1.PoolRef { return &agentv1.PoolRef{Id: id, Name: id, Path: p} }

func getFacts(t *testing.T, c agentv1connect.AgentServiceClient, refs ...*agentv1.PoolRef) []*agentv1.PoolFacts {
	t.Helper()
	resp, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{Pools: refs}))
	if err != nil {
		t.Fatalf("GetFacts: %v", err)
	}
	if len(resp.Msg.GetPools()) != len(refs) {
		t.Fatalf("GetFacts returned %d pools, want %d", len(resp.Msg.GetPools()), len(refs))
	}
	for i, f := range resp.Msg.GetPools() {
		if f.GetId() != refs[i].GetId() {
			t.Fatalf("pools[%d].id = %q, want %q", i, f.GetId(), refs[i].GetId())
		}
	}
	return resp.Msg.GetPools()
}

func initPoolRPC(t *testing.T, c agentv1connect.AgentServiceClient, r *agentv1.PoolRef) (*agentv1.PoolFacts, error) {
	t.Helper()
	resp, err := c.InitPool(t.Context(), connect.NewRequest(&agentv1.InitPoolRequest{Pool: r}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetPool(), nil
}

func wantCode(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), msg) {
		t.Fatalf("error = %v, want %v containing %q", err, code, msg)
	}
}

func TestGetFactsReasons(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, p protocol) {
		root := t.TempDir()
		srv := filepath.Join(root, "srv")
		mkdir(t, filepath.Join(srv, "empty"))
		writeFile(t, filepath.Join(srv, "file"), "not a pool")
		writeMarkerFile(t, filepath.Join(srv, "ok"), "ok", "ok")
		writeMarkerFile(t, filepath.Join(srv, "other"), "other-id", "other")
		writeFile(t, filepath.Join(srv, "damaged", poolfs.MarkerPath), "{not json")
		writeFile(t, filepath.Join(srv, "noid", poolfs.MarkerPath), `{"name":"noid"}`)
		// A marker reached through a symlink that leaves the pool directory
		// must not count: os.Root refuses to follow it.
		writeMarkerFile(t, filepath.Join(srv, "outside"), "escape", "escape")
		mkdir(t, filepath.Join(srv, "escape"))
		if err := os.Symlink("../outside/.quarry", filepath.Join(srv, "escape", poolfs.MetaDir)); err != nil {
			t.Fatal(err)
		}

		a := startAgent(t, Config{FSRoot: root})
		c := p.client(t, a)
		tests := []struct {
			ref       *agentv1.PoolRef
			mounted   bool
			reason    string // exact, or a prefix when prefix is set
			prefix    bool
			noStatfs  bool
			unwritble bool
			status    agentv1.MountStatus
		}{
			{ref: ref("ok", "/srv/ok"), mounted: true, status: agentv1.MountStatus_MOUNT_STATUS_MOUNTED},
			{ref: ref("missing", "/srv/missing"), reason: "path /srv/missing does not exist on this node", noStatfs: true, status: agentv1.MountStatus_MOUNT_STATUS_MISSING},
			{ref: ref("file", "/srv/file"), reason: "/srv/file is not a directory", noStatfs: true, status: agentv1.MountStatus_MOUNT_STATUS_NOT_DIRECTORY},
			{ref: &agentv1.PoolRef{Id: "p-empty", Name: "isos", Path: "/srv/empty"},
				reason: `/srv/empty holds no pool marker (.quarry/pool.json): this directory is not pool "isos" — is the shared filesystem mounted here?`, status: agentv1.MountStatus_MOUNT_STATUS_NO_MARKER},
			{ref: ref("mine", "/srv/other"),
				reason: `/srv/other holds the marker of another pool (id other-id, name "other"): this node's /srv/other is a different directory`, status: agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL},
			{ref: ref("damaged", "/srv/damaged"), reason: "/srv/damaged holds a damaged pool marker (.quarry/pool.json: ", prefix: true, status: agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL},
			{ref: ref("noid", "/srv/noid"), reason: `/srv/noid holds a damaged pool marker (.quarry/pool.json: no "id")`, prefix: true, status: agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL},
			{ref: ref("escape", "/srv/escape"), reason: "cannot read the pool marker of /srv/escape (.quarry/pool.json): ", prefix: true, status: agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL},
		}
		refs := make([]*agentv1.PoolRef, len(tests))
		for i, tt := range tests {
			refs[i] = tt.ref
		}
		got := getFacts(t, c, refs...)
		for i, tt := range tests {
			f := got[i]
			okReason := f.GetReason() == tt.reason || (tt.prefix && strings.HasPrefix(f.GetReason(), tt.reason))
			if f.GetMounted() != tt.mounted || !okReason {
				t.Errorf("%s: mounted=%v reason=%q\nwant mounted=%v reason=%q", tt.ref.GetPath(), f.GetMounted(), f.GetReason(), tt.mounted, tt.reason)
			}
			if f.GetStatus() != tt.status {
				t.Errorf("%s: status=%v, want %v", tt.ref.GetPath(), f.GetStatus(), tt.status)
			}
			if strings.Contains(f.GetReason(), root) {
				t.Errorf("%s: reason %q names the host directory, not the pool path", tt.ref.GetPath(), f.GetReason())
			}
			if hasSpace := f.GetTotalBytes() > 0 && f.GetFreeBytes() > 0 && f.GetFreeBytes() <= f.GetTotalBytes(); hasSpace == tt.noStatfs {
				t.Errorf("%s: free=%d total=%d, want space reported: %v", tt.ref.GetPath(), f.GetFreeBytes(), f.GetTotalBytes(), !tt.noStatfs)
			}
		}
	})
}

func TestGetFactsUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes through permission bits; an unwritable pool cannot be set up without faking it")
	}
	root := t.TempDir()
	pool := filepath.Join(root, "srv", "ro")
	writeMarkerFile(t, pool, "ro", "ro")
	if err := os.Chmod(filepath.Join(pool, poolfs.MetaDir), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(pool, poolfs.MetaDir), 0o755) })

	a := startAgent(t, Config{FSRoot: root})
	f := getFacts(t, protocols[0].client(t, a), ref("ro", "/srv/ro"))[0]
	if f.GetMounted() || !strings.HasPrefix(f.GetReason(), "/srv/ro is not writable by the agent: ") {
		t.Errorf("mounted=%v reason=%q, want not writable", f.GetMounted(), f.GetReason())
	}
	_, err := initPoolRPC(t, protocols[0].client(t, a), ref("ro", "/srv/ro"))
	if err != nil {
		t.Errorf("InitPool on an initialized read-only pool = %v, want success (nothing to write)", err)
	}
}

func TestInvalidPoolRefs(t *testing.T) {
	a := startAgent(t, Config{FSRoot: t.TempDir()})
	forEachProtocol(t, func(t *testing.T, p protocol) {
		c := p.client(t, a)
		for _, r := range []*agentv1.PoolRef{
			{Id: "", Path: "/srv/isos"},
			{Id: "p", Path: ""},
			{Id: "p", Path: "srv/isos"},
			{Id: "p", Path: "/srv/../etc"},
			{Id: "p", Path: "/srv/isos/"},
			{Id: "p", Path: "/srv//isos"},
			{Id: "p", Path: "/srv/./isos"},
			{Id: "p", Path: "/srv/is\x00os"},
		} {
			_, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{Pools: []*agentv1.PoolRef{ref("fine", "/srv/fine"), r}}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("GetFacts(%q, %q) = %v, want invalid_argument", r.GetId(), r.GetPath(), err)
			}
			if _, err := initPoolRPC(t, c, r); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("InitPool(%q, %q) = %v, want invalid_argument", r.GetId(), r.GetPath(), err)
			}
		}
		_, err := c.InitPool(t.Context(), connect.NewRequest(&agentv1.InitPoolRequest{}))
		wantCode(t, err, connect.CodeInvalidArgument, "pool is missing")
	})
}

func TestInitPool(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, p protocol) {
		root := t.TempDir()
		pool := filepath.Join(root, "srv", "isos")
		mkdir(t, pool)
		writeFile(t, filepath.Join(root, "srv", "file"), "x")
		a := startAgent(t, Config{FSRoot: root, Hostname: "node-a"})
		c := p.client(t, a)

		_, err := initPoolRPC(t, c, ref("nope", "/srv/nope"))
		wantCode(t, err, connect.CodeFailedPrecondition, "path /srv/nope does not exist on this node; create it (or mount the shared filesystem) first")
		if _, err := os.Stat(filepath.Join(root, "srv", "nope")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("InitPool created the missing directory: %v", err)
		}
		_, err = initPoolRPC(t, c, ref("file", "/srv/file"))
		wantCode(t, err, connect.CodeFailedPrecondition, "/srv/file is not a directory")

		before := time.Now().Truncate(time.Second)
		r := &agentv1.PoolRef{Id: "p1", Name: "isos", Path: "/srv/isos"}
		f, err := initPoolRPC(t, c, r)
		if err != nil {
			t.Fatalf("InitPool: %v", err)
		}
		if !f.GetMounted() || f.GetReason() != "" || f.GetId() != "p1" || f.GetTotalBytes() == 0 {
			t.Errorf("InitPool facts = %v, want mounted p1 with space", f)
		}
		raw, err := os.ReadFile(filepath.Join(pool, poolfs.MarkerPath))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("marker %s: %v", raw, err)
		}
		created, err := time.Parse(time.RFC3339, m["createdAt"])
		if err != nil || created.Before(before) || created.After(time.Now()) {
			t.Errorf("createdAt %q: %v, want RFC 3339 now", m["createdAt"], err)
		}
		delete(m, "createdAt")
		if want := map[string]string{"id": "p1", "name": "isos", "initializedBy": "node-a"}; !maps.Equal(m, want) {
			t.Errorf("marker = %v, want %v and createdAt", m, want)
		}
		for _, d := range []string{poolfs.MetaDir, poolfs.ISODir, poolfs.ImagesDir} {
			if fi, err := os.Stat(filepath.Join(pool, d)); err != nil || !fi.IsDir() || fi.Mode().Perm()&^0o755 != 0 {
				t.Errorf("layout dir %s: %v %v", d, fi, err)
			}
		}
		if names := dirNames(t, filepath.Join(pool, poolfs.MetaDir)); !slices.Equal(names, []string{"pool.json"}) {
			t.Errorf(".quarry/ holds %v, want only pool.json", names)
		}

		t.Run("idempotent", func(t *testing.T) {
			if err := os.Remove(filepath.Join(pool, poolfs.ISODir)); err != nil {
				t.Fatal(err)
			}
			f, err := initPoolRPC(t, c, &agentv1.PoolRef{Id: "p1", Name: "renamed", Path: "/srv/isos"})
			if err != nil || !f.GetMounted() {
				t.Fatalf("InitPool again = %v, %v; want success, mounted", f, err)
			}
			if again, _ := os.ReadFile(filepath.Join(pool, poolfs.MarkerPath)); string(again) != string(raw) {
				t.Errorf("marker rewritten:\n%s\nwant\n%s", again, raw)
			}
			if _, err := os.Stat(filepath.Join(pool, poolfs.ISODir)); err != nil {
				t.Errorf("missing layout dir not recreated: %v", err)
			}
		})

		t.Run("other pool", func(t *testing.T) {
			_, err := initPoolRPC(t, c, &agentv1.PoolRef{Id: "p2", Name: "other", Path: "/srv/isos"})
			wantCode(t, err, connect.CodeFailedPrecondition, `/srv/isos holds the marker of another pool (id p1, name "isos")`)
			if again, _ := os.ReadFile(filepath.Join(pool, poolfs.MarkerPath)); string(again) != string(raw) {
				t.Errorf("marker changed by a refused InitPool:\n%s", again)
			}
			if f := getFacts(t, c, &agentv1.PoolRef{Id: "p2", Name: "other", Path: "/srv/isos"})[0]; f.GetMounted() {
				t.Errorf("p2 mounted after refused InitPool")
			}
		})

		t.Run("damaged marker", func(t *testing.T) {
			dmg := filepath.Join(root, "srv", "damaged")
			writeFile(t, filepath.Join(dmg, poolfs.MarkerPath), "{")
			_, err := initPoolRPC(t, c, ref("d", "/srv/damaged"))
			wantCode(t, err, connect.CodeFailedPrecondition, "/srv/damaged holds a damaged pool marker")
			if b, _ := os.ReadFile(filepath.Join(dmg, poolfs.MarkerPath)); string(b) != "{" {
				t.Errorf("damaged marker overwritten: %q", b)
			}
		})
	})
}

// TestSharedPoolAcrossAgents runs three agents on one machine, each with its
// own filesystem. A and B bind /srv/nfs to one shared directory (NFS); C has
// its own, empty /srv/nfs/isos.
func TestSharedPoolAcrossAgents(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, p protocol) {
		shared := t.TempDir()
		mkdir(t, filepath.Join(shared, "isos"))
		bind := []Bind{{Path: "/srv/nfs", Dir: shared}}
		rootA, rootB, rootC := t.TempDir(), t.TempDir(), t.TempDir()
		mkdir(t, filepath.Join(rootC, "srv", "nfs", "isos"))
		a := startAgent(t, Config{FSRoot: rootA, Binds: bind, Hostname: "node-a"})
		b := startAgent(t, Config{FSRoot: rootB, Binds: bind, Hostname: "node-b"})
		c := startAgent(t, Config{FSRoot: rootC, Hostname: "node-c"})
		ca, cb, cc := p.client(t, a), p.client(t, b), p.client(t, c)
		r := &agentv1.PoolRef{Id: "pool-isos", Name: "isos", Path: "/srv/nfs/isos"}

		for _, cl := range []agentv1connect.AgentServiceClient{ca, cb} {
			if f := getFacts(t, cl, r)[0]; f.GetMounted() || !strings.Contains(f.GetReason(), "holds no pool marker") {
				t.Errorf("before InitPool: %v, want not mounted, no marker", f)
			}
		}
		if f, err := initPoolRPC(t, ca, r); err != nil || !f.GetMounted() {
			t.Fatalf("InitPool through A = %v, %v", f, err)
		}
		if _, err := os.Stat(filepath.Join(shared, "isos", poolfs.MarkerPath)); err != nil {
			t.Fatalf("marker not in the shared directory: %v", err)
		}
		if f := getFacts(t, ca, r)[0]; !f.GetMounted() {
			t.Errorf("A: %v, want mounted", f)
		}
		if f := getFacts(t, cb, r)[0]; !f.GetMounted() || f.GetReason() != "" || f.GetTotalBytes() == 0 {
			t.Errorf("B: %v, want mounted through the bind", f)
		}
		want := `/srv/nfs/isos holds no pool marker (.quarry/pool.json): this directory is not pool "isos" — is the shared filesystem mounted here?`
		if f := getFacts(t, cc, r)[0]; f.GetMounted() || f.GetReason() != want || f.GetTotalBytes() == 0 {
			t.Errorf("C: %v, want not mounted: %s", f, want)
		}
		// B initializing the pool A initialized is a no-op.
		if f, err := initPoolRPC(t, cb, r); err != nil || !f.GetMounted() {
			t.Errorf("InitPool through B = %v, %v; want idempotent success", f, err)
		}
	})
}

// TestInitPoolConcurrent races InitPool calls for different pools on one
// shared directory through two agents: exactly one pool must win, every call
// for it succeeds and every other call is refused.
func TestInitPoolConcurrent(t *testing.T) {
	const ids, callsPerID, rounds = 6, 3, 5
	shared := t.TempDir()
	bind := []Bind{{Path: "/srv/nfs", Dir: shared}}
	quiet := slog.New(slog.DiscardHandler)
	agents := []*testAgent{
		startAgent(t, Config{FSRoot: t.TempDir(), Binds: bind, Logger: quiet}),
		startAgent(t, Config{FSRoot: t.TempDir(), Binds: bind, Logger: quiet}),
	}
	var clients []agentv1connect.AgentServiceClient
	for _, a := range agents {
		for _, p := range protocols {
			clients = append(clients, p.client(t, a))
		}
	}

	for round := range rounds {
		path := fmt.Sprintf("/srv/nfs/pool%d", round)
		mkdir(t, filepath.Join(shared, filepath.Base(path)))
		type result struct {
			id  string
			err error
		}
		results := make(chan result, ids*callsPerID)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range ids * callsPerID {
			id := fmt.Sprintf("p%d", i%ids)
			c := clients[i%len(clients)]
			wg.Go(func() {
				<-start
				_, err := c.InitPool(t.Context(), connect.NewRequest(&agentv1.InitPoolRequest{Pool: ref(id, path)}))
				results <- result{id, err}
			})
		}
		close(start)
		wg.Wait()
		close(results)

		var m poolfs.Marker
		b, err := os.ReadFile(filepath.Join(shared, filepath.Base(path), poolfs.MarkerPath))
		if err != nil || json.Unmarshal(b, &m) != nil {
			t.Fatalf("round %d: marker %q: %v", round, b, err)
		}
		succeeded := 0
		for r := range results {
			switch {
			case r.err == nil && r.id == m.ID:
				succeeded++
			case r.err == nil:
				t.Errorf("round %d: InitPool for %s succeeded, but the marker is %s's", round, r.id, m.ID)
			case r.id == m.ID:
				t.Errorf("round %d: InitPool for the winner %s failed: %v", round, r.id, r.err)
			default:
				wantCode(t, r.err, connect.CodeFailedPrecondition, "holds the marker of another pool (id "+m.ID)
			}
		}
		if succeeded != callsPerID {
			t.Errorf("round %d: %d calls succeeded, want the %d for %s", round, succeeded, callsPerID, m.ID)
		}
		if names := dirNames(t, filepath.Join(shared, filepath.Base(path), poolfs.MetaDir)); !slices.Equal(names, []string{"pool.json"}) {
			t.Errorf("round %d: .quarry/ holds %v, want only pool.json", round, names)
		}
	}
}

// TestInitPoolConcurrentDirect races initPool itself, without the network in
// between, to make the calls overlap as much as possible.
func TestInitPoolConcurrentDirect(t *testing.T) {
	const n, rounds = 32, 20
	for round := range rounds {
		dir := t.TempDir()
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = initPool(poolRef{id: fmt.Sprint(i), path: "/p"}, dir, "h", time.Now())
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for _, err := range errs {
			if err == nil {
				winners++
			} else if !errors.Is(err, errclass.FailedPrecondition) {
				t.Errorf("round %d: unexpected error: %v", round, err)
			}
		}
		if winners != 1 {
			t.Errorf("round %d: %d winners, want 1", round, winners)
		}
	}
}

// TestGetFactsLeavesNoTrace checks that GetFacts, including its writability
// probe, leaves every file as it was.
func TestGetFactsLeavesNoTrace(t *testing.T) {
	root := t.TempDir()
	srv := filepath.Join(root, "srv")
	writeMarkerFile(t, filepath.Join(srv, "ok"), "ok", "ok")
	writeFile(t, filepath.Join(srv, "ok", poolfs.ISODir, "a.iso"), "iso")
	writeMarkerFile(t, filepath.Join(srv, "other"), "other", "other")
	writeFile(t, filepath.Join(srv, "damaged", poolfs.MarkerPath), "{")
	mkdir(t, filepath.Join(srv, "empty"))
	writeFile(t, filepath.Join(srv, "file"), "x")

	before := snapshot(t, root)
	a := startAgent(t, Config{FSRoot: root})
	refs := []*agentv1.PoolRef{
		ref("ok", "/srv/ok"), ref("x", "/srv/other"), ref("damaged", "/srv/damaged"),
		ref("empty", "/srv/empty"), ref("file", "/srv/file"), ref("missing", "/srv/missing"),
	}
	forEachProtocol(t, func(t *testing.T, p protocol) {
		c := p.client(t, a)
		for range 5 {
			if f := getFacts(t, c, refs...); !f[0].GetMounted() {
				t.Fatalf("/srv/ok not mounted (%s): the probe did not run", f[0].GetReason())
			}
		}
	})
	t.Cleanup(func() {
		if after := snapshot(t, root); !maps.Equal(before, after) {
			t.Errorf("GetFacts changed the disk:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// snapshot describes every file under root: type, mode and content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	s := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b) + " " + fi.ModTime().String()
		}
		s[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
