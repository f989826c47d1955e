// Package pgtest runs a real PostgreSQL server for tests: a throwaway
// cluster in a temporary directory, made with the installed server binaries
// (initdb, pg_ctl), listening only on a Unix socket in that directory, so
// test processes running side by side never collide on a port.
//
// A test package starts at most one cluster, on first use, and stops and
// removes it when its tests end: call Main from TestMain. Every test gets a
// database of its own (NewDatabase), or a schema of its own in a shared
// database (NewSchema: far cheaper, for a fresh store per subtest), dropped
// when the test ends. The cluster's locale is C, so text sorts by byte as
// in SQLite.
//
// A test binary killed before Main returns (a panic, -timeout) leaves its
// server running; pg_ctl stop -D /tmp/quarry-pg-*/data ends it.
//
// When no binaries are found under /usr/lib/postgresql/*/bin or on PATH,
// a root process installs Debian's postgresql package with apt; any other
// process skips the tests that need PostgreSQL, saying what to install. As
// root the cluster runs as user nobody, since PostgreSQL refuses to run as
// root.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// superuser is the role initdb creates; local connections trust it.
const superuser = "postgres"

// Cluster is a running PostgreSQL server in a temporary directory.
type Cluster struct {
	dir  string // data in dir/data, socket and log beside it
	bin  string
	cred *syscall.Credential // nil: run as this process's user
	db   *sql.DB             // to the postgres database, for CREATE/DROP DATABASE
	next atomic.Int64

	mu      sync.Mutex
	schemas bool // database "schemas" made
}

var (
	sharedOnce    sync.Once
	shared        *Cluster
	sharedErr     error
	sharedSkip    string
	sharedStarted atomic.Bool
)

// Main runs the package's tests and then stops the cluster if one was
// started: os.Exit(pgtest.Main(m)) in TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if sharedStarted.Load() && shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// NewDatabase returns the URL of a new, empty database on the package's
// cluster (started on first use), dropped when t ends. It skips t when
// PostgreSQL is missing and cannot be installed, and fails it when the
// cluster does not start.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return cluster(t).NewDatabase(t)
}

// NewSchema returns the URL of a new, empty schema in a database the
// package's tests share, as the only schema on that URL's search_path, and
// drops it when t ends. Tables the URL's user creates without a schema go
// there, so it serves as a database of its own at a fraction of the cost
// of CREATE DATABASE: for suites that want a fresh store per subtest.
func NewSchema(t testing.TB) string {
	t.Helper()
	return cluster(t).NewSchema(t)
}

// cluster returns the package's cluster, starting it on first use.
func cluster(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		bin, skip, err := findOrInstall()
		switch {
		case err != nil:
			sharedErr = err
		case skip != "":
			sharedSkip = skip
		default:
			shared, sharedErr = Start(bin)
			sharedStarted.Store(shared != nil)
		}
	})
	switch {
	case sharedSkip != "":
		t.Skip(sharedSkip)
	case sharedErr != nil:
		t.Fatalf("PostgreSQL for tests: %v", sharedErr)
	}
	return shared
}

// Start makes a cluster with the server binaries in bin and starts it.
func Start(bin string) (c *Cluster, err error) {
	c = &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		if c.cred, err = nobody(); err != nil {
			return nil, err
		}
	}
	// Not t.TempDir: its parents are private to root, and the server may
	// run as nobody. Short, too: a socket path must fit in 107 bytes.
	if c.dir, err = os.MkdirTemp("", "quarry-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop() //nolint:errcheck // reporting the first error
			c = nil
		}
	}()
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return c, err
		}
	}
	if err := c.run("initdb", "-D", c.data(), "-U", superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		return c, err
	}
	// Durability off: the cluster dies with the tests. No TCP at all.
	opts := strings.Join([]string{
		"-k " + c.dir, "-c listen_addresses=", "-c fsync=off", "-c synchronous_commit=off",
		"-c full_page_writes=off", "-c max_connections=200", "-c shared_buffers=32MB",
	}, " ")
	if err := c.run("pg_ctl", "start", "-w", "-t", "60", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-o", opts); err != nil {
		return c, err
	}
	cfg, err := pgx.ParseConfig(c.URL("postgres"))
	if err != nil {
		return c, err
	}
	c.db = stdlib.OpenDB(*cfg)
	if err := c.db.Ping(); err != nil {
		return c, fmt.Errorf("connecting to the test cluster: %w", err)
	}
	return c, nil
}

// URL is the connection URL of database name on c.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&sslmode=disable", superuser, name, c.dir)
}

// NewDatabase creates an empty database and returns its URL; it is dropped
// (with whatever still connects to it) when t ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", c.next.Add(1))
	if _, err := c.db.Exec(`CREATE DATABASE ` + name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	c.dropAtEnd(t, name)
	return c.URL(name)
}

// NewSchema creates a schema in the database "schemas" and returns a URL
// with it as the search path; it is dropped when t ends.
func (c *Cluster) NewSchema(t testing.TB) string {
	t.Helper()
	c.mu.Lock()
	if !c.schemas {
		if _, err := c.db.Exec(`CREATE DATABASE schemas`); err != nil {
			c.mu.Unlock()
			t.Fatalf("creating the database for schemas: %v", err)
		}
		c.schemas = true
	}
	c.mu.Unlock()
	name := fmt.Sprintf("test_%d", c.next.Add(1))
	cfg, err := pgx.ParseConfig(c.URL("schemas"))
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if _, err := db.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatalf("creating schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		db := stdlib.OpenDB(*cfg)
		defer db.Close()
		if _, err := db.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
		}
	})
	return c.URL("schemas") + "&search_path=" + name
}

func (c *Cluster) dropAtEnd(t testing.TB, name string) {
	t.Cleanup(func() {
		if _, err := c.db.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})
}

// Stop stops the server and removes its directory.
func (c *Cluster) Stop() error {
	var errs []error
	if c.db != nil {
		errs = append(errs, c.db.Close())
	}
	if _, err := os.Stat(filepath.Join(c.data(), "postmaster.pid")); err == nil {
		errs = append(errs, c.run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", c.data()))
	}
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs one of the server's programs as the cluster's user.
func (c *Cluster) run(prog string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "HOME="+c.dir, "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		return fmt.Errorf("%s %s: %w\n%s%s", prog, strings.Join(args, " "), err, out, log)
	}
	return nil
}

// nobody is the user a root process runs the server as.
func nobody() (*syscall.Credential, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no user nobody to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// findOrInstall returns the directory of initdb and pg_ctl. When there is
// none, root installs them with apt; anyone else gets a reason to skip.
func findOrInstall() (bin, skip string, err error) {
	if bin = find(); bin != "" {
		return bin, "", nil
	}
	if os.Geteuid() != 0 {
		return "", "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH, " +
			"and not root to install them: install postgresql (apt-get install postgresql) to run the PostgreSQL tests", nil
	}
	fmt.Fprintln(os.Stderr, "pgtest: installing postgresql with apt-get")
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "postgresql"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	if bin = find(); bin == "" {
		return "", "", errors.New("installed postgresql, yet no initdb under /usr/lib/postgresql/*/bin")
	}
	return bin, "", nil
}

// find returns the directory of the newest installed initdb, or "".
func find() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if executable(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	return ""
}

// version is the major version in /usr/lib/postgresql/N/bin.
func version(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
