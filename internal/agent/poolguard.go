package agent

import (
	"fmt"
	"path/filepath"

	"github.com/quarry-project/quarry/internal/names"
)

// refusal says why the agent will not keep pool ref in dir, the host
// directory its path resolves to, or "" when it may. The control plane
// refuses such paths too; the agent checks again because it is the one
// that writes, and only it sees where a bind or a symlink really leads and
// what filesystem is there.
func (a *Agent) refusal(ref poolRef, dir string) string {
	if t := names.SystemTree(ref.path); t != "" {
		return fmt.Sprintf("pool path %s is in the system directory %s; the agent keeps no images there", ref.path, t)
	}
	real := dir
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		real = r
	}
	// Under --fs-root, the pool's path is already inside the agent's own
	// view of the filesystem; elsewhere (binds, the real filesystem, a
	// symlink out of the root) the host directory itself must not be a
	// system one.
	if !(a.paths.fsRoot != "" && names.Within(real, a.paths.fsRoot)) {
		if t := names.SystemTree(real); t != "" {
			return fmt.Sprintf("pool path %s is served from %s, in the system directory %s; the agent keeps no images there", ref.path, real, t)
		}
	}
	if a.cfg.DataDir != "" {
		if own, err := filepath.Abs(a.cfg.DataDir); err == nil {
			if err := names.CheckOwnDir(real, own, "the agent's data directory"); err != nil {
				return err.Error()
			}
		}
	}
	if fs := pseudoFS(real); fs != "" {
		return fmt.Sprintf("pool path %s is on a %s filesystem, which is the kernel's, not storage; the agent keeps no images there", ref.path, fs)
	}
	return ""
}
