package agent

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// poolRef is a validated pool reference: the pool's id, its name and its path
// as the pool spec gives it (absolute, clean).
type poolRef struct {
	id, name, path string
}

// label names the pool in messages.
func (r poolRef) label() string {
	if r.name != "" {
		return r.name
	}
	return r.id
}

// checkPoolRef validates a reference coming from the wire.
func checkPoolRef(id, name, p string) (poolRef, error) {
	switch {
	case id == "":
		return poolRef{}, errclass.New(errclass.InvalidArgument, "pool %q at %q: id is empty", name, p)
	case p == "":
		return poolRef{}, errclass.New(errclass.InvalidArgument, "pool %s: path is empty", id)
	case strings.ContainsRune(p, 0):
		return poolRef{}, errclass.New(errclass.InvalidArgument, "pool %s: path %q contains a NUL byte", id, p)
	case !path.IsAbs(p):
		return poolRef{}, errclass.New(errclass.InvalidArgument, "pool %s: path %q is not absolute", id, p)
	case path.Clean(p) != p:
		return poolRef{}, errclass.New(errclass.InvalidArgument, "pool %s: path %q is not clean (want %q)", id, p, path.Clean(p))
	}
	return poolRef{id: id, name: name, path: p}, nil
}

// facts is what the agent reports about one pool.
type facts struct {
	mounted     bool
	status      agentv1.MountStatus
	reason      string // why not mounted; "" when mounted
	free, total uint64
}

// inspect decides whether dir, the host directory serving pool ref, is that
// pool. It leaves the disk as it found it: the writability probe removes its
// file again.
func inspect(ref poolRef, dir string) facts {
	var f facts
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.status = agentv1.MountStatus_MOUNT_STATUS_MISSING
		f.reason = fmt.Sprintf("path %s does not exist on this node", ref.path)
		return f
	case err != nil:
		f.status = agentv1.MountStatus_MOUNT_STATUS_MISSING
		f.reason = fmt.Sprintf("cannot inspect %s: %v", ref.path, cause(err))
		return f
	case !fi.IsDir():
		f.status = agentv1.MountStatus_MOUNT_STATUS_NOT_DIRECTORY
		f.reason = fmt.Sprintf("%s is not a directory", ref.path)
		return f
	}
	f.free, f.total = space(dir)
	f.status, f.reason = mountProblem(ref, dir)
	f.mounted = f.status == agentv1.MountStatus_MOUNT_STATUS_MOUNTED
	return f
}

// mountProblem classifies the existing directory dir and says why it is
// not pool ref here; the reason is "" when it is.
func mountProblem(ref poolRef, dir string) (agentv1.MountStatus, string) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return agentv1.MountStatus_MOUNT_STATUS_NOT_WRITABLE, fmt.Sprintf("%s is not readable by the agent: %v", ref.path, cause(err))
	}
	defer root.Close()

	m, err := poolfs.ReadMarker(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Only this status lets the control plane initialize the directory.
		return agentv1.MountStatus_MOUNT_STATUS_NO_MARKER, markerProblem(ref, err).Error()
	case err != nil:
		return agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL, markerProblem(ref, err).Error()
	case m.ID != ref.id:
		return agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL, otherPool(ref, m).Error()
	}
	if err := probeRead(root); err != nil {
		return agentv1.MountStatus_MOUNT_STATUS_NOT_WRITABLE, fmt.Sprintf("%s is not readable by the agent: %v", ref.path, cause(err))
	}
	if err := probeWrite(root); err != nil {
		return agentv1.MountStatus_MOUNT_STATUS_NOT_WRITABLE, fmt.Sprintf("%s is not writable by the agent: %v", ref.path, cause(err))
	}
	return agentv1.MountStatus_MOUNT_STATUS_MOUNTED, ""
}

// markerProblem explains, as a failed precondition, why the marker of ref
// could not be read.
func markerProblem(ref poolRef, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errclass.New(errclass.FailedPrecondition, "%s holds no pool marker (%s): this directory is not pool %q — is the shared filesystem mounted here?",
			ref.path, poolfs.MarkerPath, ref.label())
	case errors.Is(err, poolfs.ErrBadMarker):
		return errclass.New(errclass.FailedPrecondition, "%s holds a damaged pool marker (%s: %v): repair or remove it, then initialize the pool again",
			ref.path, poolfs.MarkerPath, err)
	case errors.Is(err, fs.ErrPermission):
		return errclass.New(errclass.FailedPrecondition, "%s is not readable by the agent: %v", ref.path, cause(err))
	default:
		return errclass.New(errclass.FailedPrecondition, "cannot read the pool marker of %s (%s): %v", ref.path, poolfs.MarkerPath, cause(err))
	}
}

func otherPool(ref poolRef, m poolfs.Marker) error {
	return errclass.New(errclass.FailedPrecondition, "%s holds the marker of another pool (id %s, name %q): this node's %s is a different directory",
		ref.path, m.ID, m.Name, ref.path)
}

func probeRead(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.Readdirnames(1); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// probeWrite proves the agent can write in .quarry/ by creating and removing
// a file there.
func probeWrite(root *os.Root) error {
	name := poolfs.MetaDir + "/.probe-" + rand.Text()
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return errors.Join(f.Close(), root.Remove(name))
}

// initPool writes the marker of ref into dir, an existing directory, and
// creates the pool layout. A marker of the same pool already there is
// success; one of another pool is a failed precondition.
func initPool(ref poolRef, dir, hostname string, now time.Time) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errclass.New(errclass.FailedPrecondition, "path %s does not exist on this node; create it (or mount the shared filesystem) first", ref.path)
	case err != nil:
		return errclass.New(errclass.FailedPrecondition, "cannot inspect %s: %v", ref.path, cause(err))
	case !fi.IsDir():
		return errclass.New(errclass.FailedPrecondition, "%s is not a directory", ref.path)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return errclass.New(errclass.FailedPrecondition, "%s is not readable by the agent: %v", ref.path, cause(err))
	}
	defer root.Close()

	write := true
	switch m, err := poolfs.ReadMarker(root); {
	case err == nil && m.ID != ref.id:
		return otherPool(ref, m)
	case err == nil:
		write = false // already initialized: only make sure the layout is complete
	case !errors.Is(err, fs.ErrNotExist):
		return markerProblem(ref, err)
	}

	if err := poolfs.MakeDirs(root); err != nil {
		return writeProblem(ref, err)
	}
	if write {
		m := poolfs.Marker{ID: ref.id, Name: ref.name, CreatedAt: now.UTC().Format(time.RFC3339), InitializedBy: hostname}
		if err := poolfs.CreateMarker(root, m); errors.Is(err, fs.ErrExist) {
			// Another InitPool won the race; it is success only if it was
			// for the same pool.
			m, err := poolfs.ReadMarker(root)
			if err != nil {
				return markerProblem(ref, err)
			}
			if m.ID != ref.id {
				return otherPool(ref, m)
			}
		} else if err != nil {
			return writeProblem(ref, err)
		}
	}
	return nil
}

// writeProblem classifies a failure to write into the pool.
func writeProblem(ref poolRef, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return errclass.New(errclass.FailedPrecondition, "%s is not writable by the agent: %v", ref.path, err)
	case errors.Is(err, syscall.ENOSPC):
		return errclass.New(errclass.FailedPrecondition, "no space left in %s: %v", ref.path, err)
	default:
		return fmt.Errorf("initializing pool %s at %s: %w", ref.id, ref.path, err)
	}
}
