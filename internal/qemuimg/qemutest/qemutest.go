// Package qemutest gives tests a qemu-img: the one installed, or, for a
// root process without one, Debian's qemu-utils installed with apt once
// per test binary. Anyone else gets a skip that says what to install, so a
// test never passes without having run qemu-img.
package qemutest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/quarry-project/quarry/internal/qemuimg"
)

var (
	once sync.Once
	tool qemuimg.Tool
	skip string
	err  error
)

// Require returns qemu-img, installing it when missing and root.
func Require(t testing.TB) qemuimg.Tool {
	t.Helper()
	once.Do(func() { tool, skip, err = findOrInstall() })
	if err != nil {
		t.Fatal(err)
	}
	if skip != "" {
		t.Skip(skip)
	}
	return tool
}

func findOrInstall() (qemuimg.Tool, string, error) {
	ctx := context.Background()
	if t, err := qemuimg.Find(ctx, ""); err == nil {
		return t, "", nil
	}
	if os.Geteuid() != 0 {
		return qemuimg.Tool{}, "qemu-img not found, and not root to install it: install qemu-utils (apt-get install qemu-utils) to run the conversion tests", nil
	}
	// Test binaries of several packages run at once and would race for
	// apt's locks: one installs, the others wait and find it installed.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "quarry-qemutest.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return qemuimg.Tool{}, "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return qemuimg.Tool{}, "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	if t, err := qemuimg.Find(ctx, ""); err == nil {
		return t, "", nil
	}
	fmt.Fprintln(os.Stderr, "qemutest: installing qemu-utils with apt-get")
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "qemu-utils"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return qemuimg.Tool{}, "", fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	t, err := qemuimg.Find(ctx, "")
	if err != nil {
		return qemuimg.Tool{}, "", fmt.Errorf("installed qemu-utils, yet: %w", err)
	}
	return t, "", nil
}
