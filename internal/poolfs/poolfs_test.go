package poolfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

func TestPaths(t *testing.T) {
	for _, tt := range []struct {
		rel       string
		pathErr   string // "" when CheckPath accepts it
		imageErr  string // "" when CheckImagePath accepts it
		iso, meta bool
	}{
		{rel: "iso/a.iso", iso: true},
		{rel: "iso/deep/er/b.ISO", iso: true},
		{rel: "images/disk.qcow2"},
		{rel: "images/x"},
		{rel: "disk.qcow2", imageErr: "not under iso/ or images/"},
		{rel: "iso", imageErr: "not under iso/ or images/"},
		{rel: "isofiles/a.iso", imageErr: "not under iso/ or images/"},
		{rel: ".quarry", imageErr: "not under iso/ or images/", meta: true},
		{rel: ".quarry/pool.json", imageErr: "not under iso/ or images/", meta: true},
		{rel: ".quarry/partial/job-1", imageErr: "not under iso/ or images/", meta: true},
		{rel: ".quarryx/a", imageErr: "not under iso/ or images/"},
		{rel: "", pathErr: "empty or holds a NUL byte"},
		{rel: "iso/a.iso\x00", pathErr: "empty or holds a NUL byte"},
		{rel: ".", pathErr: "not a clean path inside the pool"},
		{rel: "..", pathErr: "not a clean path inside the pool"},
		{rel: "../etc/passwd", pathErr: "not a clean path inside the pool"},
		{rel: "iso/../../etc/passwd", pathErr: "not a clean path inside the pool"},
		{rel: "iso/../.quarry/pool.json", pathErr: "not a clean path inside the pool"},
		{rel: "/etc/passwd", pathErr: "not a clean path inside the pool"},
		{rel: "images//a", pathErr: "not a clean path inside the pool"},
		{rel: "images/a/", pathErr: "not a clean path inside the pool"},
		{rel: "./images/a", pathErr: "not a clean path inside the pool"},
		{rel: `images\..\..\a`, pathErr: "not a clean path inside the pool"},
	} {
		t.Run(tt.rel, func(t *testing.T) {
			check := func(what string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s(%q) = %v; want success", what, tt.rel, err)
				case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
					t.Errorf("%s(%q) = %v; want an error saying %q", what, tt.rel, err, want)
				}
			}
			check("CheckPath", CheckPath(tt.rel), tt.pathErr)
			imageErr := tt.imageErr
			if tt.pathErr != "" {
				imageErr = tt.pathErr
			}
			check("CheckImagePath", CheckImagePath(tt.rel), imageErr)
			if tt.pathErr != "" {
				return // the predicates below take clean paths only
			}
			if got := IsISOPath(tt.rel); got != tt.iso {
				t.Errorf("IsISOPath(%q) = %v; want %v", tt.rel, got, tt.iso)
			}
			if got := IsImagePath(tt.rel); got != (tt.imageErr == "") {
				t.Errorf("IsImagePath(%q) = %v; want %v", tt.rel, got, tt.imageErr == "")
			}
			if got := IsMeta(tt.rel); got != tt.meta {
				t.Errorf("IsMeta(%q) = %v; want %v", tt.rel, got, tt.meta)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct {
		name        string
		hidden, iso bool
	}{
		{"ubuntu.iso", false, true},
		{"Debian.ISO", false, true},
		{".ubuntu.iso.Xy12", true, false}, // rsync's temporary file
		{".partial.iso", true, false},
		{".quarry", true, false},
		{"readme.txt", false, false},
		{"iso", false, false},
	} {
		if got := Hidden(tt.name); got != tt.hidden {
			t.Errorf("Hidden(%q) = %v; want %v", tt.name, got, tt.hidden)
		}
		if got := IsISOName(tt.name); got != tt.iso {
			t.Errorf("IsISOName(%q) = %v; want %v", tt.name, got, tt.iso)
		}
	}
	if got := ImagePath("a.iso", true); got != "iso/a.iso" || CheckImagePath(got) != nil {
		t.Errorf("ImagePath(a.iso, ISO) = %q", got)
	}
	if got := ImagePath("a.qcow2", false); got != "images/a.qcow2" || CheckImagePath(got) != nil {
		t.Errorf("ImagePath(a.qcow2) = %q", got)
	}
}

// TestResolveStaysInside: a path CheckPath accepts still cannot leave the
// pool through a symlink, because every access goes through the root.
func TestResolveStaysInside(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "pool.json"), []byte(`{"id":"stolen"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	pool := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(pool, MetaDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(pool, ISODir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../..", filepath.Join(pool, ISODir, "up")); err != nil {
		t.Fatal(err)
	}
	root := openRoot(t, pool)
	if m, err := ReadMarker(root); err == nil {
		t.Fatalf("ReadMarker through a symlinked %s = %+v; want a refusal", MetaDir, m)
	}
	if err := CreateMarker(root, Marker{ID: "p1"}); err == nil {
		t.Fatalf("CreateMarker through a symlinked %s succeeded", MetaDir)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Fatalf("the directory outside holds %d entries; want pool.json alone", len(entries))
	}
	for _, rel := range []string{"iso/up/etc/passwd", "iso/up"} {
		if err := CheckImagePath(rel); err != nil {
			t.Fatalf("CheckImagePath(%q) = %v; the test needs a path it accepts", rel, err)
		}
		if _, err := root.Stat(rel + "/x"); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("root.Stat(%q) = %v; want a refusal to leave the root", rel+"/x", err)
		}
	}
}

func TestMarker(t *testing.T) {
	pool := t.TempDir()
	root := openRoot(t, pool)
	if _, err := ReadMarker(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadMarker of an empty directory: %v; want fs.ErrNotExist", err)
	}
	if err := MakeDirs(root); err != nil {
		t.Fatal(err)
	}
	if err := MakeDirs(root); err != nil {
		t.Fatalf("MakeDirs again: %v", err)
	}
	want := Marker{ID: "p1", Name: "isos", CreatedAt: "2024-01-02T03:04:05Z", InitializedBy: "n1"}
	if err := CreateMarker(root, want); err != nil {
		t.Fatal(err)
	}
	if err := CreateMarker(root, Marker{ID: "p2"}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a second CreateMarker: %v; want fs.ErrExist", err)
	}
	if got, err := ReadMarker(root); err != nil || got != want {
		t.Fatalf("ReadMarker = %+v, %v; want %+v", got, err, want)
	}
	entries, err := os.ReadDir(filepath.Join(pool, MetaDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"pool.json"}) {
		t.Errorf("%s holds %v; want pool.json alone (no temporary file left)", MetaDir, names)
	}

	for _, tt := range []struct{ name, content, want string }{
		{"not json", "{", "unexpected end of JSON input"},
		{"no id", `{"name":"x"}`, `no "id"`},
		{"too large", `{"id":"x","name":"` + strings.Repeat("a", MaxMarkerSize) + `"}`, "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(pool, MarkerPath), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadMarker(root)
			if !errors.Is(err, ErrBadMarker) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadMarker = %v; want ErrBadMarker saying %q", err, tt.want)
			}
		})
	}
}
