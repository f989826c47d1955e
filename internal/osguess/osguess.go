// Package osguess guesses the operating system an installer ISO or cloud
// image holds from its volume label and file name: distribution, version
// and architecture. A guess is a hint for people and filters, never a fact
// anything depends on; fields it cannot tell stay empty.
package osguess

import (
	"path/filepath"
	"regexp"
	"strings"
)

// OS is a guess. Distro is a lower-case id ("ubuntu", "windows",
// "centos-stream", "opensuse-leap"); Arch is normalized ("amd64", "arm64",
// "i386", "ppc64le", "s390x", "riscv64").
type OS struct {
	Distro  string
	Version string
	Arch    string
}

// String reads like "ubuntu 24.04 amd64".
func (o OS) String() string {
	return strings.Join(strings.Fields(o.Distro+" "+o.Version+" "+o.Arch), " ")
}

// distro is one rule: a pattern that names the distribution, and how to
// find its version in the same text.
type distro struct {
	id      string
	name    *regexp.Regexp
	version *regexp.Regexp // first submatch(es) joined with '.'
}

// Order matters: more specific names first (CentOS Stream before CentOS,
// Windows Server before Windows).
var distros = []distro{
	{"ubuntu", rx(`ubuntu`), rx(`(\d{2})\.(\d{2})`)},
	{"debian", rx(`debian`), rx(`(?:debian)[ _-]*(\d{1,2})(?:\.\d+)*`)},
	{"rocky", rx(`rocky`), rx(`rocky(?:linux)?[ _-]*(\d{1,2})(?:[._-](\d{1,2}))?`)},
	{"almalinux", rx(`alma`), rx(`alma(?:linux)?[ _-]*(\d{1,2})(?:[._-](\d{1,2}))?`)},
	{"centos-stream", rx(`centos[ _-]*stream`), rx(`stream[ _-]*(\d{1,2})`)},
	{"centos", rx(`centos`), rx(`centos[ _-]*(\d{1,2})(?:\.(\d{1,2}))?`)},
	{"rhel", rx(`\brhel\b|red ?hat`), rx(`(?:rhel|enterprise)[ _-]*(\d{1,2})(?:[._-](\d{1,2}))?`)},
	{"fedora", rx(`fedora`), rx(`(?:^|\D)([2-9]\d)(?:\D|$)`)},
	{"opensuse-leap", rx(`opensuse[ _-]*leap|\bleap[ _-]*\d`), rx(`leap[ _-]*(\d{2})\.(\d)`)},
	{"opensuse-tumbleweed", rx(`tumbleweed`), nil},
	{"sles", rx(`\bsle[s]?\b|suse linux enterprise`), rx(`sles?[ _-]*(\d{2})(?:[ _-]*sp(\d))?`)},
	{"windows-server", rx(`windows[ _-]*server|\bsss_|\bssS_x64|win(?:dows)?[ _-]*srv`), rx(`server[ _-]*(20\d\d)`)},
	{"windows", rx(`windows|\bwin\d{2}|cccoma_|cpba_|cena_|ccsa_|\bj_ccsa`), rx(`win(?:dows)?[ _-]*(1[01])(?:\D|$)`)},
	{"freebsd", rx(`freebsd`), rx(`freebsd[ _-]*(\d{2})\.(\d)`)},
	{"arch", rx(`\barch(?:linux)?[ _-]*20\d\d|archlinux`), nil},
}

func rx(s string) *regexp.Regexp { return regexp.MustCompile(`(?i)` + s) }

var arches = []struct {
	id string
	re *regexp.Regexp
}{
	{"amd64", rx(`amd64|x86[_-]64|\bx64|x64fre|_x64`)},
	{"arm64", rx(`arm64|aarch64`)},
	{"i386", rx(`\bi[3-6]86\b|\bx86\b|\bx86fre|_x86`)},
	{"ppc64le", rx(`ppc64le|ppc64el`)},
	{"s390x", rx(`s390x`)},
	{"riscv64", rx(`riscv64`)},
}

// Guess looks at the label first and falls back to the file name (its base
// name, without directories) for whatever the label does not tell.
func Guess(label, fileName string) OS {
	name := filepath.Base(fileName)
	if fileName == "" {
		name = ""
	}
	var o OS
	for _, text := range []string{label, name} {
		fill(&o, text)
	}
	return o
}

func fill(o *OS, text string) {
	if text == "" {
		return
	}
	if o.Distro == "" {
		for _, d := range distros {
			if d.name.MatchString(text) {
				o.Distro = d.id
				break
			}
		}
	}
	if o.Distro != "" && o.Version == "" {
		// Architecture names hold digits ("x86_64") that read like versions.
		bare := text
		for _, a := range arches {
			bare = a.re.ReplaceAllString(bare, " ")
		}
		for _, d := range distros {
			if d.id == o.Distro && d.version != nil {
				o.Version = version(d.version, bare)
			}
		}
	}
	if o.Arch == "" {
		for _, a := range arches {
			if a.re.MatchString(text) {
				o.Arch = a.id
				break
			}
		}
	}
}

// version joins the non-empty submatches of the first match: "9", "4" →
// "9.4".
func version(re *regexp.Regexp, text string) string {
	m := re.FindStringSubmatch(text)
	if m == nil {
		return ""
	}
	var parts []string
	for _, p := range m[1:] {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ".")
}
