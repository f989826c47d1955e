package catalog

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/names"
)

// Bounds on free text, so a catalog file cannot bloat every ListCatalog.
const (
	maxNameLen  = 200
	maxURLLen   = 2048
	maxNotesLen = 1000
	maxUserLen  = 32
)

// Formats a catalog entry may declare: what a cloud image is shipped as.
var formats = []string{"qcow2", "raw"}

// arches are the architecture ids, as in internal/osguess; aliases maps
// the kernel's names to them for hints.
var (
	arches  = []string{"amd64", "arm64", "i386", "ppc64le", "s390x", "riscv64"}
	aliases = map[string]string{"x86_64": "amd64", "x64": "amd64", "aarch64": "arm64", "i686": "i386", "ppc64el": "ppc64le"}
)

// Validate checks an entry and returns its first problem, saying what to
// change. Id, name, URL and format are required; OS facts, default user and
// checksum are not (an entry without a checksum downloads unverified).
func (e Entry) Validate() error {
	if e.ID == "" {
		return fmt.Errorf(`"id" is missing; give a short id such as "ubuntu-24.04"`)
	}
	if err := names.Check("catalog entry", e.ID); err != nil {
		return err
	}
	if e.Name == "" {
		return fmt.Errorf(`"name" is missing; give a name for people, such as "Ubuntu 24.04 LTS"`)
	}
	if err := checkText("name", e.Name, maxNameLen, false); err != nil {
		return err
	}
	if err := checkURL("url", e.URL); err != nil {
		return err
	}
	if e.Checksum != "" {
		if _, err := checksum.ParseDigest(e.Checksum); err != nil {
			return fmt.Errorf(`"checksum": %v`, err)
		}
	}
	if e.ChecksumURL != "" {
		if err := checkURL("checksumUrl", e.ChecksumURL); err != nil {
			return err
		}
		// The checksum file is searched for the image's file name.
		if u, _ := url.Parse(e.URL); fileName(u) == "" {
			return fmt.Errorf(`"url" %q does not end in a file name, so its line in the checksum file cannot be found; pin "checksum" instead`, e.URL)
		}
	}
	if e.Format == "" {
		return fmt.Errorf(`"format" is missing; give one of %s`, strings.Join(formats, ", "))
	}
	if !slices.Contains(formats, e.Format) {
		return fmt.Errorf(`"format" %q is not one of %s`, e.Format, strings.Join(formats, ", "))
	}
	if err := e.OS.validate(); err != nil {
		return err
	}
	if e.DefaultUser != "" && !isUserName(e.DefaultUser) {
		return fmt.Errorf(`"defaultUser" %q is not a user name: up to %d lower-case letters, digits, '_' or '-', starting with a letter or '_'`, e.DefaultUser, maxUserLen)
	}
	return checkText("notes", e.Notes, maxNotesLen, true)
}

func (o OS) validate() error {
	if o.Distro != "" && !isID(o.Distro) {
		return fmt.Errorf(`"os.distro" %q must be a lower-case id such as "ubuntu" or "centos-stream"`, o.Distro)
	}
	if err := checkText("os.version", o.Version, 32, false); err != nil {
		return err
	}
	if o.Arch != "" && !slices.Contains(arches, o.Arch) {
		hint := ""
		if a, ok := aliases[strings.ToLower(o.Arch)]; ok {
			hint = fmt.Sprintf("; did you mean %q?", a)
		}
		return fmt.Errorf(`"os.arch" %q is not one of %s%s`, o.Arch, strings.Join(arches, ", "), hint)
	}
	return nil
}

// checkURL accepts absolute http and https URLs with a host and without
// credentials: catalog entries are shown to every API user.
func checkURL(field, s string) error {
	if s == "" {
		return fmt.Errorf("%q is missing; give the http or https URL of the image", field)
	}
	if len(s) > maxURLLen {
		return fmt.Errorf("%q is %d characters long; the limit is %d", field, len(s), maxURLLen)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("%q %q contains white space; percent-encode it (%%20)", field, s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q %q is not a URL: %v", field, s, err)
	}
	if scheme := strings.ToLower(u.Scheme); scheme != "http" && scheme != "https" {
		return fmt.Errorf("%q %q must be an http or https URL", field, s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q %q has no host", field, s)
	}
	if u.User != nil {
		return fmt.Errorf("%q %q contains credentials; catalog entries are visible to every user, so use a URL without them", field, s)
	}
	return nil
}

// fileName is the last element of u's path, or "" when it has none.
func fileName(u *url.URL) string {
	if u == nil || u.Path == "" || strings.HasSuffix(u.Path, "/") {
		return ""
	}
	return path.Base(u.Path)
}

// checkText rejects control characters (newlines too, unless multiline)
// and text longer than limit bytes.
func checkText(field, s string, limit int, multiline bool) error {
	if len(s) > limit {
		return fmt.Errorf("%q is %d characters long; the limit is %d", field, len(s), limit)
	}
	for _, c := range s {
		if (c < 0x20 && !(multiline && c == '\n')) || c == 0x7f {
			return fmt.Errorf("%q contains the control character %q", field, c)
		}
	}
	return nil
}

// isID: lower-case letters, digits and '-', starting with a letter.
func isID(s string) bool {
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '-')) {
			return false
		}
	}
	return len(s) <= 32
}

// isUserName follows useradd's default NAME_REGEX.
func isUserName(s string) bool {
	if len(s) > maxUserLen {
		return false
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '-')) {
			return false
		}
	}
	return true
}
