package names

import (
	"fmt"
	"path/filepath"
)

// systemTrees are the directories of the operating system a pool must never
// be in: writing images there could replace what the host runs or is
// configured by, and the pseudo filesystems among them are not storage.
var systemTrees = []string{"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libexec", "/libx32",
	"/proc", "/run", "/sbin", "/sys", "/usr"}

// SystemTree returns the system directory that the clean absolute path p is
// or lies in ("/etc" for /etc/images), and "" when there is none.
func SystemTree(p string) string {
	for _, t := range systemTrees {
		if Within(p, t) {
			return t
		}
	}
	return ""
}

// checkSystemTree refuses a pool path in a system directory, saying why.
func checkSystemTree(p string) error {
	if t := SystemTree(p); t != "" {
		return fmt.Errorf("pool path %s is in the system directory %s; images there could overwrite what the host runs or is configured by, so pools live elsewhere, such as /srv/images", p, t)
	}
	return nil
}

// CheckOwnDir refuses a pool path p that would mix a pool with dir, the data
// directory of a Quarry server or agent: p may not be dir, hold it, or lie in
// it, except in its pools/ subdirectory (where dev mode keeps its pool).
// Both must be clean absolute paths; an empty dir refuses nothing.
func CheckOwnDir(p, dir, whose string) error {
	if dir == "" {
		return nil
	}
	if Within(dir, p) || Within(p, dir) && !Within(p, filepath.Join(dir, "pools")) {
		return fmt.Errorf("pool path %s overlaps %s (%s), which holds its keys and database; choose a directory outside it, such as /srv/images", p, whose, dir)
	}
	return nil
}
