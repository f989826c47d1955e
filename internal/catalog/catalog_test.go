package catalog

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuiltin(t *testing.T) {
	entries := Builtin()
	if len(entries) < 10 {
		t.Fatalf("Builtin has %d entries; want the ten well-known images", len(entries))
	}
	seen := map[string]bool{}
	for _, e := range entries {
		t.Run(e.ID, func(t *testing.T) {
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if seen[e.ID] {
				t.Fatalf("id %q appears twice", e.ID)
			}
			seen[e.ID] = true
			if e.OS.Distro == "" || e.OS.Version == "" || e.OS.Arch != "amd64" {
				t.Errorf("OS = %+v; want distro, version and arch amd64", e.OS)
			}
			if e.DefaultUser == "" {
				t.Error("no default user")
			}
			if e.Origin != OriginBuiltin {
				t.Errorf("Origin = %q; want %q", e.Origin, OriginBuiltin)
			}
			// Upstream rebuilds these images: a pinned digest would go stale.
			if e.Checksum != "" || e.ChecksumURL == "" {
				t.Errorf("Checksum = %q, ChecksumURL = %q; want a checksum file, no pinned digest", e.Checksum, e.ChecksumURL)
			}
			img, _ := url.Parse(e.URL)
			sums, _ := url.Parse(e.ChecksumURL)
			if img.Scheme != "https" || sums.Scheme != "https" {
				t.Errorf("URLs %s and %s; want https", e.URL, e.ChecksumURL)
			}
			if img.Host != sums.Host || filepath.Dir(img.Path) != filepath.Dir(sums.Path) {
				t.Errorf("checksum file %s is not beside the image %s", e.ChecksumURL, e.URL)
			}
			if !strings.HasPrefix(e.ID, e.OS.Distro+"-") || !strings.HasSuffix(e.ID, "-"+e.OS.Version) {
				t.Errorf("id %q does not read as <distro>-<version> of %+v", e.ID, e.OS)
			}
		})
	}
	// Builtin returns a copy: changing it does not change the next one.
	entries[0].URL = "https://example.com/x.img"
	if Builtin()[0].URL == entries[0].URL {
		t.Error("Builtin shares its backing array")
	}
}

// writeFile writes a catalog file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFile(t *testing.T) {
	p := writeFile(t, "catalog.json", `{
  "entries": [
    {
      "id": "lab-image",
      "name": "Lab test image",
      "os": {"distro": "debian", "version": "13", "arch": "amd64"},
      "url": "http://127.0.0.1:8081/img.qcow2",
      "checksum": "SHA256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
      "format": "qcow2",
      "defaultUser": "debian",
      "notes": "Served by the lab's web server."
    },
    {
      "id": "ubuntu-24.04",
      "name": "Ubuntu 24.04 LTS (local mirror)",
      "os": {"distro": "ubuntu", "version": "24.04", "arch": "amd64"},
      "url": "https://mirror.example.net/ubuntu/noble/noble-server-cloudimg-amd64.img",
      "checksumUrl": "https://mirror.example.net/ubuntu/noble/SHA256SUMS",
      "format": "qcow2",
      "defaultUser": "ubuntu"
    }
  ]
}`)
	c, err := Load(true, p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	list := c.List()
	if len(list) != len(builtin)+1 {
		t.Errorf("List has %d entries; want %d built-in + 1 added", len(list), len(builtin))
	}
	if !slices.IsSortedFunc(list, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("List is not sorted by id")
	}

	lab, err := c.Get("lab-image")
	if err != nil {
		t.Fatalf("Get(lab-image): %v", err)
	}
	want := Entry{
		ID: "lab-image", Name: "Lab test image",
		OS:       OS{Distro: "debian", Version: "13", Arch: "amd64"},
		URL:      "http://127.0.0.1:8081/img.qcow2",
		Checksum: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		Format:   "qcow2", DefaultUser: "debian", Notes: "Served by the lab's web server.",
		Origin: p,
	}
	if lab != want {
		t.Errorf("Get(lab-image) = %+v\nwant %+v", lab, want)
	}

	ub, err := c.Get("ubuntu-24.04")
	if err != nil {
		t.Fatalf("Get(ubuntu-24.04): %v", err)
	}
	if ub.Name != "Ubuntu 24.04 LTS (local mirror)" || !strings.HasPrefix(ub.URL, "https://mirror.example.net/") || ub.Origin != p {
		t.Errorf("Get(ubuntu-24.04) = %+v; want the file's override", ub)
	}
	if jammy, _ := c.Get("ubuntu-22.04"); jammy.Origin != OriginBuiltin {
		t.Errorf("ubuntu-22.04 Origin = %q; want it untouched", jammy.Origin)
	}
}

func TestLoadLayers(t *testing.T) {
	entry := func(name string) string {
		return `{"entries": [{"id": "img", "name": "` + name + `", "url": "https://example.com/img.raw", "format": "raw"}]}`
	}
	first := writeFile(t, "a.json", entry("first"))
	second := writeFile(t, "b.json", entry("second"))
	c, err := Load(false, first, second)
	if err != nil {
		t.Fatal(err)
	}
	if list := c.List(); len(list) != 1 || list[0].Name != "second" || list[0].Origin != second {
		t.Fatalf("List = %+v; want only the later file's entry", list)
	}
	if _, err := c.Get("ubuntu-24.04"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(ubuntu-24.04) without built-ins = %v; want ErrNotFound", err)
	}
	empty, err := Load(false, writeFile(t, "empty.json", `{"entries": []}`))
	if err != nil || len(empty.List()) != 0 {
		t.Fatalf("Load(empty list) = %v, %v; want an empty catalog", empty, err)
	}
}

func TestLoadErrors(t *testing.T) {
	// entry returns a valid entry with fields replaced or added.
	entry := func(extra string) string {
		return `{"entries": [{"id": "img", "name": "Image", "url": "https://example.com/img.qcow2", "format": "qcow2"` + extra + `}]}`
	}
	tests := []struct{ name, content, err string }{
		{"empty", "  \n", `is empty; write {"entries"`},
		{"array root", `[{"id": "img"}]`, "must hold one JSON object"},
		{"syntax", "{\n  \"entries\": [\n    {\"id\": \"img\",}\n  ]\n}", "line 3, column 19: invalid character '}'"},
		{"truncated", `{"entries": [{"id": "img"`, "ends early"},
		{"trailing text", `{"entries": []} {}`, "line 1, column 17: unexpected text after the closing }"},
		{"unknown root key", `{"entries": [], "version": 1}`, `unknown field "version"`},
		{"misspelt root key", `{"entry": []}`, `unknown field "entry"; did you mean "entries"?`},
		{"no entries", `{}`, `has no "entries" list`},
		{"entries not a list", `{"entries": {"id": "img"}}`, `"entries" must be a list of objects`},
		{"entries null", `{"entries": null}`, `"entries" must be a list of objects`},
		{"entry not an object", `{"entries": ["ubuntu"]}`, "entry 1: is not an object"},
		{"snake case", entry(`, "checksum_url": "https://example.com/SUMS"`), `entry 1 ("img"): unknown field "checksum_url"; did you mean "checksumUrl"?`},
		{"upper case", `{"entries": [{"id": "img", "name": "Image", "URL": "https://example.com/img.qcow2", "format": "qcow2"}]}`, `unknown field "URL"; did you mean "url"?`},
		{"unrelated key", entry(`, "colour": "blue"`), `unknown field "colour"; known fields are id, name, os, url`},
		{"origin is not settable", entry(`, "origin": "x"`), `unknown field "origin"`},
		{"unknown os key", entry(`, "os": {"distro": "debian", "release": "13"}`), `unknown field "os.release"`},
		{"os not object", entry(`, "os": "debian"`), `"os" must be an object`},
		{"wrong type", entry(`, "notes": 5`), `"notes" must be a string, not a number`},
		{"wrong nested type", entry(`, "os": {"arch": 64}`), `"os.arch" must be a string, not a number`},
		{"missing id", `{"entries": [{"name": "Image", "url": "https://example.com/img.qcow2", "format": "qcow2"}]}`, `entry 1: "id" is missing`},
		{"bad id", `{"entries": [{"id": "Ubuntu 24.04", "name": "x", "url": "https://e.com/a.img", "format": "qcow2"}]}`, `entry 1 ("Ubuntu 24.04"): catalog entry name "Ubuntu 24.04" contains ' '`},
		{"id starts with dash", `{"entries": [{"id": "-x", "name": "x", "url": "https://e.com/a.img", "format": "qcow2"}]}`, "must start with a letter or digit"},
		{"missing name", `{"entries": [{"id": "img", "url": "https://example.com/img.qcow2", "format": "qcow2"}]}`, `"name" is missing`},
		{"control in name", `{"entries": [{"id": "img", "name": "a\nb", "url": "https://example.com/img.qcow2", "format": "qcow2"}]}`, `"name" contains the control character '\n'`},
		{"missing url", `{"entries": [{"id": "img", "name": "Image", "format": "qcow2"}]}`, `"url" is missing`},
		{"ftp url", `{"entries": [{"id": "img", "name": "Image", "url": "ftp://example.com/img.qcow2", "format": "qcow2"}]}`, `"url" "ftp://example.com/img.qcow2" must be an http or https URL`},
		{"file url", `{"entries": [{"id": "img", "name": "Image", "url": "file:///srv/img.qcow2", "format": "qcow2"}]}`, "must be an http or https URL"},
		{"relative url", `{"entries": [{"id": "img", "name": "Image", "url": "img.qcow2", "format": "qcow2"}]}`, "must be an http or https URL"},
		{"no host", `{"entries": [{"id": "img", "name": "Image", "url": "https:///img.qcow2", "format": "qcow2"}]}`, "has no host"},
		{"credentials", `{"entries": [{"id": "img", "name": "Image", "url": "https://u:p@example.com/img.qcow2", "format": "qcow2"}]}`, "contains credentials"},
		{"space in url", `{"entries": [{"id": "img", "name": "Image", "url": "https://example.com/my img.qcow2", "format": "qcow2"}]}`, "white space"},
		{"bad checksum", entry(`, "checksum": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`), `"checksum": checksum "e3b0c44298fc1c149afb…" must be sha256:<64 hex digits>`},
		{"short checksum", entry(`, "checksum": "sha256:abc"`), "a sha256 digest is 64 hex digits"},
		{"bad checksum url", entry(`, "checksumUrl": "SHA256SUMS"`), `"checksumUrl" "SHA256SUMS" must be an http or https URL`},
		{"no file name to look up", `{"entries": [{"id": "img", "name": "Image", "url": "https://example.com/latest/", "checksumUrl": "https://example.com/SUMS", "format": "qcow2"}]}`, "does not end in a file name"},
		{"missing format", `{"entries": [{"id": "img", "name": "Image", "url": "https://example.com/img.qcow2"}]}`, `"format" is missing; give one of qcow2, raw`},
		{"bad format", entry(`, "format": "iso"`), `"format" "iso" is not one of qcow2, raw`},
		{"kernel arch", entry(`, "os": {"arch": "x86_64"}`), `"os.arch" "x86_64" is not one of amd64, arm64, i386, ppc64le, s390x, riscv64; did you mean "amd64"?`},
		{"bad distro", entry(`, "os": {"distro": "Ubuntu"}`), `"os.distro" "Ubuntu" must be a lower-case id`},
		{"bad user", entry(`, "defaultUser": "Cloud User"`), `"defaultUser" "Cloud User" is not a user name`},
		{"long notes", entry(`, "notes": "` + strings.Repeat("x", 1001) + `"`), `"notes" is 1001 characters long; the limit is 1000`},
		{"duplicate id", `{"entries": [
			{"id": "img", "name": "A", "url": "https://example.com/a.qcow2", "format": "qcow2"},
			{"id": "img", "name": "B", "url": "https://example.com/b.qcow2", "format": "qcow2"}]}`,
			`entry 2 ("img"): entry 1 has the same id`},
		{"every bad entry reported", `{"entries": [{"id": "a"}, {"id": "b", "name": "B", "url": "https://e.com/b.img", "format": "qcow2"}, {"id": "c"}]}`,
			`entry 1 ("a"): "name" is missing; give a name for people, such as "Ubuntu 24.04 LTS"` + "\n" + `catalog file `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "catalog.json", tt.content)
			c, err := Load(true, p)
			if err == nil {
				t.Fatalf("Load = %d entries, nil error; want error containing %q", len(c.List()), tt.err)
			}
			if !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "catalog file "+p) {
				t.Fatalf("Load error:\n%v\nwant it to name the file and contain %q", err, tt.err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Load(true, filepath.Join(t.TempDir(), "nope.json"))
		if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.json") {
			t.Fatalf("Load = %v; want a not-exist error naming the file", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		p := writeFile(t, "big.json", `{"entries": [], "x": "`+strings.Repeat("x", maxFileSize)+`"}`)
		if _, err := Load(true, p); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("Load = %v; want a size error", err)
		}
	})
}

func TestGet(t *testing.T) {
	c, err := Load(true)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := c.Get("rocky-9"); err != nil || e.DefaultUser != "rocky" {
		t.Fatalf("Get(rocky-9) = %+v, %v", e, err)
	}
	tests := []struct{ id, want string }{
		{"ubuntu-2404", `no catalog entry "ubuntu-2404"; did you mean ubuntu-24.04? see quarry catalog ls`},
		{"Ubuntu-24.04", `no catalog entry "Ubuntu-24.04"; did you mean ubuntu-24.04? see quarry catalog ls`},
		{"debian", `no catalog entry "debian"; did you mean debian-12 or debian-13? see quarry catalog ls`},
		{"centos-9", `no catalog entry "centos-9"; did you mean centos-stream-9? see quarry catalog ls`},
		{"alma-9", `no catalog entry "alma-9"; did you mean almalinux-9? see quarry catalog ls`},
		{"fedora-42", `no catalog entry "fedora-42"; did you mean fedora-43? see quarry catalog ls`},
		{"rocky-8", `no catalog entry "rocky-8"; did you mean rocky-9? see quarry catalog ls`},
		{"windows-11", `no catalog entry "windows-11"; see quarry catalog ls`},
		{"", "no catalog entry id given; see quarry catalog ls"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			_, err := c.Get(tt.id)
			if err == nil || err.Error() != tt.want || !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(%q) = %v;\nwant ErrNotFound %q", tt.id, err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Entry{ID: "img", Name: "Image", URL: "https://example.com/img.qcow2", Format: "qcow2"}
	tests := []struct {
		name string
		edit func(*Entry)
		err  string
	}{
		{"minimal", func(*Entry) {}, ""},
		{"pinned and checksum file", func(e *Entry) {
			e.Checksum = "sha512:" + strings.Repeat("0", 128)
			e.ChecksumURL = "https://example.com/SHA512SUMS"
		}, ""},
		{"http with port", func(e *Entry) { e.URL = "http://127.0.0.1:8081/img.qcow2" }, ""},
		{"ipv6 host", func(e *Entry) { e.URL = "http://[::1]:8081/img.qcow2" }, ""},
		{"multiline notes", func(e *Entry) { e.Notes = "line one\nline two" }, ""},
		{"tab in notes", func(e *Entry) { e.Notes = "a\tb" }, "control character"},
		{"port only host", func(e *Entry) { e.URL = "http://:80/img.qcow2" }, "has no host"},
		{"sha1 pin", func(e *Entry) { e.Checksum = "sha1:" + strings.Repeat("0", 40) }, "must be sha256:"},
		{"user with digit first", func(e *Entry) { e.DefaultUser = "1admin" }, "not a user name"},
		{"long user", func(e *Entry) { e.DefaultUser = strings.Repeat("a", 33) }, "not a user name"},
		{"long id", func(e *Entry) { e.ID = strings.Repeat("a", 64) }, "the limit is 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.edit(&e)
			err := e.Validate()
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Validate(%+v) = %v; want error containing %q", e, err, tt.err)
			}
		})
	}
}

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"ubuntu-2404", "ubuntu-24.04", 1}, {"checksum_url", "checksumurl", 1},
	} {
		if got := distance(tt.a, tt.b); got != tt.want {
			t.Errorf("distance(%q, %q) = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
