package dirlock

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestAcquire: a held directory refuses a second lock, even from the same
// process, naming the holder; released, it can be locked again.
func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "quarry server")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "quarry server")
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second lock: %v, want ErrInUse", err)
	}
	want := fmt.Sprintf("data directory %s is in use by quarry server (pid %d); stop it or pass another --data-dir", dir, os.Getpid())
	if err.Error() != want {
		t.Errorf("refusal %q, want %q", err, want)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = Acquire(dir, "quarry agent")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	defer l.Release()
	data, _ := os.ReadFile(dir + "/" + FileName)
	if got := strings.TrimSpace(string(data)); got != fmt.Sprintf("%d quarry agent", os.Getpid()) {
		t.Errorf("lock file holds %q", got)
	}
}

func TestAcquireMissingDir(t *testing.T) {
	if _, err := Acquire(t.TempDir()+"/nope", "quarry server"); err == nil || errors.Is(err, ErrInUse) {
		t.Fatalf("lock of a missing directory: %v", err)
	}
}
