// Package names validates what operators name things (nodes, pools, images)
// and the paths they give pools. Every message says what is allowed.
package names

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds a name.
const MaxLen = 63

// Check validates a name of the given kind ("node", "pool"): 1 to 63
// characters, letters, digits, '.', '_' and '-', starting with a letter or
// digit. Names end up in file names, URLs and shell commands, so nothing
// else is allowed.
func Check(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty; give a name of letters, digits, '.', '_' or '-'", kind)
	}
	if len(s) > MaxLen {
		return fmt.Errorf("%s name %q is %d characters long; the limit is %d", kind, s, len(s), MaxLen)
	}
	for i, c := range s {
		letterOrDigit := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !letterOrDigit {
			return fmt.Errorf("%s name %q must start with a letter or digit", kind, s)
		}
		if !letterOrDigit && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%s name %q contains %q; use only letters, digits, '.', '_' and '-'", kind, s, c)
		}
	}
	return nil
}

// MaxPathLen bounds a pool path.
const MaxPathLen = 1024

// CheckPoolPath validates a pool's path: absolute, already clean, not the
// root, printable.
func CheckPoolPath(p string) error {
	if p == "" {
		return fmt.Errorf("pool path is empty; give the absolute path of the pool directory on the nodes, such as /srv/images")
	}
	if len(p) > MaxPathLen {
		return fmt.Errorf("pool path is %d bytes long; the limit is %d", len(p), MaxPathLen)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("pool path %q is not valid UTF-8", p)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("pool path %q contains a control character", p)
		}
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("pool path %q is relative; give an absolute path such as /srv/images", p)
	}
	if c := filepath.Clean(p); c != p {
		return fmt.Errorf("pool path %q is not clean (no trailing '/', '//', '.' or '..'); did you mean %q?", p, c)
	}
	if p == "/" {
		return fmt.Errorf("pool path cannot be the filesystem root")
	}
	return checkSystemTree(p)
}

// Within reports whether path a is b or inside b (on path-component
// boundaries). Both must be clean absolute paths.
func Within(a, b string) bool {
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/")
}
