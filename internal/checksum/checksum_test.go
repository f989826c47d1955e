package checksum

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSamples(t *testing.T) {
	tests := []struct {
		file  string
		count int
		find  string // the image a catalog entry would download
		want  Entry
	}{
		{"ubuntu-noble-SHA256SUMS", 12, "noble-server-cloudimg-amd64.img",
			Entry{SHA256, "b776fcff89bf96258076898779565c53842c1b2cc0e2a89a89e329892aae638e", "noble-server-cloudimg-amd64.img"}},
		{"fedora-43-CHECKSUM", 6, "Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2",
			Entry{SHA256, "0925314ac13909cd4a144b68b8e3b7c297926a96650bf7f4bd19b2f112add950", "Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2"}},
		{"debian-trixie-SHA512SUMS", 12, "debian-13-genericcloud-amd64.qcow2",
			Entry{SHA512, "9d2f891c2b35683ca2daa336dc021a3616e47f231989b6ddf6e948c6828583db6a651542d8e8aebc7dd1947d3de214d8ca76a8018d266bb32a84b22a6b187603", "debian-13-genericcloud-amd64.qcow2"}},
		{"rocky-9-CHECKSUM", 8, "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2",
			Entry{SHA256, "e33c3b27c699a20750914493c32b2495a9886a477d1a1e7dc8f780e496dc3520", "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2"}},
		{"almalinux-9-CHECKSUM", 4, "AlmaLinux-9-GenericCloud-latest.x86_64.qcow2",
			Entry{SHA256, "4497e09b97298ce6006d59deb436370aa4dd77563b7147cfac82b3154faf7f79", "AlmaLinux-9-GenericCloud-latest.x86_64.qcow2"}},
		// Sidecars name the dated build the "latest" link points to.
		{"centos-stream-9-latest.SHA256SUM", 1, "CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2",
			Entry{SHA256, "fb7436d347b6af22d6892a7f7851b27f6adcc66495d0b37317ff40208f319820", "CentOS-Stream-GenericCloud-9-20250609.0.x86_64.qcow2"}},
		{"opensuse-leap-15.6-NoCloud.qcow2.sha256", 1, "openSUSE-Leap-15.6.x86_64-NoCloud.qcow2",
			Entry{SHA256, "29705cd315bccb7b840257cac7cefd7e03ba5e2c06e8618364d405a8af9affe6", "openSUSE-Leap-15.6.x86_64-1.0.0-NoCloud-Build6.284.qcow2"}},
		// Upper-case hex, CRLF, "./" names; looked up by a URL path.
		{"crlf-dotslash-SHA256SUMS", 2, "/pub/x/images/disk.qcow2",
			Entry{SHA256, "8aadccad59efdbbc2afdf6034ea2523b3f36f5d2888ef46a042ba7db2773d906", "images/disk.qcow2"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "samples", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			entries, err := Parse(f, 0)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(entries) != tt.count {
				t.Errorf("Parse found %d entries; want %d: %v", len(entries), tt.count, entries)
			}
			got, err := Find(entries, tt.find)
			if err != nil {
				t.Fatalf("Find(%q): %v", tt.find, err)
			}
			if got != tt.want {
				t.Errorf("Find(%q) = %+v; want %+v", tt.find, got, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const (
		h256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		h512 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
		md5  = "d41d8cd98f00b204e9800998ecf8427e"
	)
	tests := []struct {
		name, in string
		want     []Entry
		err      string
	}{
		{"gnu text", h256 + "  a.img\n", []Entry{{SHA256, h256, "a.img"}}, ""},
		{"gnu binary", h256 + " *a.img", []Entry{{SHA256, h256, "a.img"}}, ""},
		{"single space", h256 + " a.img", []Entry{{SHA256, h256, "a.img"}}, ""},
		{"tab", h256 + "\ta.img", []Entry{{SHA256, h256, "a.img"}}, ""},
		{"name with spaces", h256 + "  my disk.img  \n", []Entry{{SHA256, h256, "my disk.img"}}, ""},
		{"upper hex", strings.ToUpper(h256) + "  a", []Entry{{SHA256, h256, "a"}}, ""},
		{"sha512 by length", h512 + "  a", []Entry{{SHA512, h512, "a"}}, ""},
		{"bare digest", h256 + "\n", []Entry{{SHA256, h256, ""}}, ""},
		{"dot slash", h256 + "  ././a", []Entry{{SHA256, h256, "a"}}, ""},
		{"escaped name", `\` + h256 + `  a\\b\nc`, []Entry{{SHA256, h256, "a\\b\nc"}}, ""},
		{"bsd", "SHA256 (a.img) = " + h256, []Entry{{SHA256, h256, "a.img"}}, ""},
		{"bsd sha512", "SHA512 (a.img) = " + h512, []Entry{{SHA512, h512, "a.img"}}, ""},
		{"bsd parens in name", "SHA256 (a (1).img) = " + h256, []Entry{{SHA256, h256, "a (1).img"}}, ""},
		{"openssl", "SHA2-256(a.img)= " + h256, []Entry{{SHA256, h256, "a.img"}}, ""},
		{"bsd lower tag", "sha256 (a) = " + h256, []Entry{{SHA256, h256, "a"}}, ""},
		{"bsd dot slash", "SHA256 (./a) = " + h256, []Entry{{SHA256, h256, "a"}}, ""},
		{"crlf and comments", "# list\r\n\r\n  # indented\r\n" + h256 + "  a\r\n", []Entry{{SHA256, h256, "a"}}, ""},
		{"other algorithms skipped", "MD5 (a) = " + md5 + "\n" + md5 + "  a\nSHA256 (a) = " + h256, []Entry{{SHA256, h256, "a"}}, ""},
		{"prose skipped", "Checksums for release 1\n" + h256 + "  a\n", []Entry{{SHA256, h256, "a"}}, ""},
		{"pgp", "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- " + h256 + "  a\n-----BEGIN PGP SIGNATURE-----\n\n" +
			h512 + "  inside-signature\n-----END PGP SIGNATURE-----\n", []Entry{{SHA256, h256, "a"}}, ""},
		{"pgp crlf", "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA512\r\n\r\nSHA256 (a) = " + h256 + "\r\n-----BEGIN PGP SIGNATURE-----\r\nxx\r\n-----END PGP SIGNATURE-----\r\n",
			[]Entry{{SHA256, h256, "a"}}, ""},
		{"armor headers are not entries", "-----BEGIN PGP SIGNED MESSAGE-----\n" + h256 + "  header\n\n" + h256 + "  a\n", []Entry{{SHA256, h256, "a"}}, ""},

		{"empty", "", nil, "checksum file is empty"},
		{"blank", "\r\n\n", nil, "checksum file is empty"},
		{"comments only", "# nothing\n\n", nil, "no SHA-256 or SHA-512"},
		{"html", "<!DOCTYPE html>\n<html><body>Log in</body></html>\n", nil, `starts with "<!DOCTYPE html>"`},
		{"md5 only", md5 + "  a\n", nil, "no SHA-256 or SHA-512"},
		{"bsd short digest", "SHA256 (a) = " + h256[:63], nil, "line 1: SHA256 digest"},
		{"bsd sha512 tag, sha256 digest", "# x\nSHA512 (a) = " + h256, nil, "line 2: SHA512 digest"},
		{"bsd non-hex", "SHA256 (a) = " + strings.Repeat("z", 64), nil, "not 64 hex digits"},
		{"binary", h256 + "  a\x00", nil, "binary data"},
		{"long line", h256 + "  " + strings.Repeat("a", MaxLineLen), nil, "line 1 is longer than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in), 0)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse = %v, %v; want an ErrMalformed containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Parse = %+v; want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d = %+v; want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseLimit(t *testing.T) {
	line := strings.Repeat("0", 64) + "  a\n"
	in := strings.Repeat(line, 10)
	if _, err := Parse(strings.NewReader(in), int64(len(in))); err != nil {
		t.Fatalf("Parse at exactly the limit: %v", err)
	}
	_, err := Parse(strings.NewReader(in), int64(len(in)-1))
	if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Parse over the limit = %v; want a size error", err)
	}
	big := strings.Repeat(line, DefaultLimit/len(line)+1)
	if _, err := Parse(strings.NewReader(big), 0); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Fatalf("Parse over the default limit = %v; want a size error", err)
	}
}

func TestFind(t *testing.T) {
	a := strings.Repeat("a", 64)
	b := strings.Repeat("b", 64)
	c := strings.Repeat("c", 128)
	ubuntu := make([]Entry, 12)
	for i := range ubuntu {
		ubuntu[i] = Entry{SHA256, a, "noble-server-cloudimg-arm64-" + string(rune('a'+i)) + ".img"}
	}
	tests := []struct {
		name    string
		entries []Entry
		file    string
		want    Entry
		err     string
		class   error
	}{
		{"exact", []Entry{{SHA256, a, "x/a.img"}, {SHA256, b, "a.img"}}, "a.img", Entry{SHA256, b, "a.img"}, "", nil},
		{"exact path", []Entry{{SHA256, a, "x/a.img"}, {SHA256, b, "y/a.img"}}, "x/a.img", Entry{SHA256, a, "x/a.img"}, "", nil},
		{"base name", []Entry{{SHA256, a, "other.img"}, {SHA256, b, "a.img"}}, "/pub/fedora/a.img", Entry{SHA256, b, "a.img"}, "", nil},
		{"dot slash request", []Entry{{SHA256, a, "other.img"}, {SHA256, b, "a.img"}}, "./a.img", Entry{SHA256, b, "a.img"}, "", nil},
		{"sidecar", []Entry{{SHA256, a, "dated-1.img"}}, "latest.img", Entry{SHA256, a, "dated-1.img"}, "", nil},
		{"bare digest", []Entry{{SHA256, a, ""}}, "latest.img", Entry{SHA256, a, ""}, "", nil},
		{"prefers sha512", []Entry{{SHA256, a, "a.img"}, {SHA512, c, "a.img"}}, "a.img", Entry{SHA512, c, "a.img"}, "", nil},
		{"repeated, same digest", []Entry{{SHA256, a, "a.img"}, {SHA256, a, "./a.img"}}, "a.img", Entry{SHA256, a, "a.img"}, "", nil},

		{"missing", ubuntu, "ubuntu-24.04-server-cloudimg-amd64.img", Entry{},
			`no checksum for ubuntu-24.04-server-cloudimg-amd64.img in the checksum file (it lists 12 files: "noble-server-cloudimg-arm64-a.img", ` +
				`"noble-server-cloudimg-arm64-b.img", "noble-server-cloudimg-arm64-c.img", "noble-server-cloudimg-arm64-d.img", …)`, ErrNoChecksum},
		{"missing of two", []Entry{{SHA256, a, "b.img"}, {SHA256, b, "c.img"}}, "a.img", Entry{}, `(it lists 2 files: "b.img", "c.img")`, ErrNoChecksum},
		{"nothing listed", nil, "a.img", Entry{}, "(it lists no files)", ErrNoChecksum},
		{"conflict", []Entry{{SHA256, a, "a.img"}, {SHA256, b, "a.img"}}, "a.img", Entry{},
			`the checksum file lists different sha256 checksums for a.img (under "a.img"); give the image's checksum explicitly`, ErrAmbiguous},
		{"ambiguous base name", []Entry{{SHA256, a, "amd64/a.img"}, {SHA256, b, "arm64/a.img"}}, "a.img", Entry{},
			`(under "amd64/a.img", "arm64/a.img")`, ErrAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Find(tt.entries, tt.file)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, tt.class) {
					t.Fatalf("Find = %+v, %v; want %v containing %q", got, err, tt.class, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Find = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestFindInNamesSource(t *testing.T) {
	entries := make([]Entry, 12)
	for i := range entries {
		entries[i] = Entry{SHA256, strings.Repeat("a", 64), string(rune('a'+i)) + ".img"}
	}
	_, err := FindIn("https://cloud-images.ubuntu.com/noble/current/SHA256SUMS", entries, "ubuntu-24.04-server-cloudimg-amd64.img")
	want := "no checksum for ubuntu-24.04-server-cloudimg-amd64.img in https://cloud-images.ubuntu.com/noble/current/SHA256SUMS (it lists 12 files: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("FindIn = %v; want %q…", err, want)
	}
}

func TestParseDigest(t *testing.T) {
	h256 := strings.Repeat("ab", 32)
	h512 := strings.Repeat("cd", 64)
	tests := []struct {
		in   string
		want Digest
		err  string
	}{
		{"sha256:" + h256, Digest{SHA256, h256}, ""},
		{"SHA256:" + strings.ToUpper(h256), Digest{SHA256, h256}, ""},
		{"sha512:" + h512, Digest{SHA512, h512}, ""},
		{"Sha512:" + strings.ToUpper(h512), Digest{SHA512, h512}, ""},
		{" sha256:" + h256 + "\n", Digest{SHA256, h256}, ""},
		{"", Digest{}, "must be sha256:<64 hex digits> or sha512:<128 hex digits>"},
		{h256, Digest{}, `it has no algorithm: put "sha256:" in front`},
		{h512, Digest{}, `it has no algorithm: put "sha512:" in front`},
		{"abc", Digest{}, "must be sha256:"},
		{"md5:" + h256[:32], Digest{}, `must be sha256:<64 hex digits> or sha512:<128 hex digits>; algorithm "md5" is not supported`},
		{"sha256:" + h256[:62], Digest{}, "a sha256 digest is 64 hex digits"},
		{"sha256:" + h256 + "ab", Digest{}, "a sha256 digest is 64 hex digits"},
		{"sha512:" + h256, Digest{}, "a sha512 digest is 128 hex digits"},
		{"sha256:" + strings.Repeat("g", 64), Digest{}, "64 hex digits"},
		{"sha256: " + h256, Digest{}, "64 hex digits"},
		{"sha256:", Digest{}, "64 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDigest(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseDigest = %v; want error containing %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDigest = %+v, %v; want %+v", got, err, tt.want)
			}
			if again, err := ParseDigest(got.String()); err != nil || again != got {
				t.Fatalf("ParseDigest(%q) = %+v, %v; want it unchanged", got.String(), again, err)
			}
		})
	}
	if s := (Digest{}).String(); s != "" || !(Digest{}).IsZero() {
		t.Errorf("zero Digest: String() = %q", s)
	}
}
