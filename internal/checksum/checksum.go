// Package checksum reads the checksum files that distributions publish next
// to their images (SHA256SUMS, SHA512SUMS, CHECKSUM, *.SHA256SUM, *.sha256)
// and finds the digest of one file in them.
//
// Parse accepts the GNU coreutils layout ("<hex>  name", "<hex> *name"), the
// BSD tag layout ("SHA256 (name) = <hex>", also openssl's "SHA2-256(name)=
// <hex>"), a bare digest on a line of its own, CRLF line ends, '#' comments,
// blank lines and PGP clear-signed wrappers. Only SHA-256 and SHA-512 are
// read; lines in other algorithms (MD5, SHA-1 …) are skipped.
//
// A PGP signature is NOT verified: the armor is stripped and the signed body
// is parsed as if unsigned. The file protects against corrupt downloads, not
// against a hostile mirror; verifying signatures needs distribution keys and
// a keyring policy, which are out of scope here.
package checksum

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Limits on what Parse reads. Real checksum files are a few kilobytes; a
// larger input is almost certainly not a checksum file (an image, an HTML
// page), and reading it whole would only waste memory.
const (
	DefaultLimit = 1 << 20 // bytes read when the caller passes limit <= 0
	MaxLineLen   = 4096
)

// Algorithms, as used in Entry.Algo and in digests ("sha256:<hex>").
const (
	SHA256 = "sha256"
	SHA512 = "sha512"
)

var (
	// ErrMalformed: the input is not a checksum file Parse can read.
	ErrMalformed = errors.New("malformed checksum file")
	// ErrNoChecksum: the checksum file does not list the file asked for.
	ErrNoChecksum = errors.New("no checksum for the file")
	// ErrAmbiguous: the checksum file lists different digests for the file.
	ErrAmbiguous = errors.New("ambiguous checksum")
)

// classed is an error whose message is written for people and whose class
// is one of the sentinels above.
type classed struct {
	msg   string
	class error
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

func errorf(class error, format string, args ...any) error {
	return &classed{fmt.Sprintf(format, args...), class}
}

// Entry is one digest from a checksum file.
type Entry struct {
	Algo string // SHA256 or SHA512
	Hex  string // lower case, 64 or 128 digits
	Name string // as listed, without a leading "./"; empty for a bare digest
}

// Digest returns the entry's digest.
func (e Entry) Digest() Digest { return Digest{Algo: e.Algo, Hex: e.Hex} }

// hexLen is the digest length, in hex digits, of each algorithm.
var hexLen = map[string]int{SHA256: 64, SHA512: 128}

// algoOf names the algorithm of a hex digest by its length, or "" when
// the length is not one Quarry verifies.
func algoOf(hex string) string {
	switch len(hex) {
	case 64:
		return SHA256
	case 128:
		return SHA512
	}
	return ""
}

// bsdTags maps the tags of the BSD layout to algorithms. Tags of other
// algorithms are recognized so their lines are skipped, not misread.
var bsdTags = map[string]string{
	"SHA256": SHA256, "SHA2-256": SHA256,
	"SHA512": SHA512, "SHA2-512": SHA512,
	"MD5": "", "SHA1": "", "SHA224": "", "SHA384": "", "SHA2-224": "", "SHA2-384": "",
	"SHA3-256": "", "SHA3-512": "", "BLAKE2B": "", "BLAKE2B-512": "",
}

// Parse reads a checksum file of at most limit bytes (DefaultLimit when
// limit <= 0). Lines it does not recognize are skipped, so a file with
// extra prose still works; a file without a single SHA-256 or SHA-512
// line, a digest of the wrong length after a SHA256/SHA512 tag, binary
// data or an over-long line is an error wrapping ErrMalformed.
func Parse(r io.Reader, limit int64) ([]Entry, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading checksum file: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, errorf(ErrMalformed, "checksum file is larger than %d bytes; does the checksum URL point at the image itself?", limit)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, errorf(ErrMalformed, "checksum file holds binary data; does the checksum URL point at the image itself?")
	}

	var (
		entries []Entry
		state   = plain
		first   string // first non-blank line, quoted when nothing is found
	)
	for n, line := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		if len(line) > MaxLineLen {
			return nil, errorf(ErrMalformed, "checksum file line %d is longer than %d bytes; is it really a checksum file?", lineNo, MaxLineLen)
		}
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if first == "" {
			first = trimmed
		}

		switch state {
		case armorHeaders: // "Hash: SHA256" and the like, up to a blank line
			if trimmed == "" {
				state = signedBody
			}
			continue
		case signature:
			if trimmed == endSignature {
				state = plain
			}
			continue
		}
		switch trimmed {
		case beginSigned:
			state = armorHeaders
			continue
		case beginSignature:
			state = signature
			continue
		}
		if state == signedBody {
			// RFC 4880 §7.1: body lines starting with '-' are dash-escaped.
			trimmed = strings.TrimPrefix(trimmed, "- ")
		}
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		e, ok, err := parseLine(trimmed)
		if err != nil {
			return nil, errorf(ErrMalformed, "checksum file line %d: %v", lineNo, err)
		}
		if ok {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 && first == "" {
		return nil, errorf(ErrMalformed, "checksum file is empty")
	}
	if len(entries) == 0 {
		if len(first) > 40 {
			first = first[:40] + "…"
		}
		return nil, errorf(ErrMalformed, "no SHA-256 or SHA-512 checksum lines in the checksum file (it starts with %q)", first)
	}
	return entries, nil
}

// Parser states around PGP armor.
const (
	plain        = iota // outside any armor
	armorHeaders        // after BEGIN PGP SIGNED MESSAGE, before the blank line
	signedBody          // the signed text
	signature           // inside the signature block
)

const (
	beginSigned    = "-----BEGIN PGP SIGNED MESSAGE-----"
	beginSignature = "-----BEGIN PGP SIGNATURE-----"
	endSignature   = "-----END PGP SIGNATURE-----"
)

// parseLine reads one non-blank, non-comment line. ok is false for lines
// that are not SHA-256/SHA-512 checksum lines; err is set for lines that
// claim to be but are broken.
func parseLine(line string) (e Entry, ok bool, err error) {
	if e, ok, err := parseBSD(line); ok || err != nil {
		return e, ok, err
	}
	return parseGNU(line)
}

// parseBSD reads "TAG (name) = hex", with or without the spaces.
func parseBSD(line string) (Entry, bool, error) {
	open := strings.IndexByte(line, '(')
	eq := strings.LastIndexByte(line, '=')
	if open < 0 || eq < open {
		return Entry{}, false, nil
	}
	algo, known := bsdTags[strings.ToUpper(strings.TrimSpace(line[:open]))]
	if !known {
		return Entry{}, false, nil
	}
	closing := strings.LastIndexByte(line[:eq], ')')
	if closing < open || strings.TrimSpace(line[closing+1:eq]) != "" {
		return Entry{}, false, nil
	}
	if algo == "" { // a digest Quarry does not verify
		return Entry{}, false, nil
	}
	hex := strings.TrimSpace(line[eq+1:])
	if !isHex(hex) || len(hex) != hexLen[algo] {
		return Entry{}, false, fmt.Errorf("%s digest %q is not %d hex digits", strings.ToUpper(algo), clip(hex), hexLen[algo])
	}
	name := cleanName(line[open+1 : closing])
	return Entry{Algo: algo, Hex: strings.ToLower(hex), Name: name}, true, nil
}

// parseGNU reads "hex  name", "hex *name", "hex name" or a bare "hex". A
// leading '\' means the name is escaped (coreutils writes "\\" and "\n").
func parseGNU(line string) (Entry, bool, error) {
	escaped := line[0] == '\\'
	if escaped {
		line = line[1:]
	}
	hex, rest := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		hex, rest = line[:i], line[i+1:]
	}
	algo := algoOf(hex)
	if algo == "" || !isHex(hex) {
		return Entry{}, false, nil
	}
	if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '*') {
		rest = rest[1:]
	}
	if escaped {
		rest = unescape(rest)
	}
	return Entry{Algo: algo, Hex: strings.ToLower(hex), Name: cleanName(rest)}, true, nil
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case 'r':
				b.WriteByte('\r')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cleanName drops the "./" that `sha256sum ./*` writes.
func cleanName(s string) string {
	for strings.HasPrefix(s, "./") {
		s = s[2:]
	}
	return s
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// Digest is an expected checksum, as a download request, a catalog entry
// or a checksum file gives it. The zero Digest expects nothing.
type Digest struct {
	Algo string // SHA256 or SHA512
	Hex  string // lower case, 64 or 128 digits
}

// IsZero reports whether d expects nothing.
func (d Digest) IsZero() bool { return d.Algo == "" }

// String returns d as "sha256:<hex>", the form Quarry stores and compares;
// "" for the zero Digest.
func (d Digest) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Algo + ":" + d.Hex
}

// ParseDigest reads a digest written as "sha256:<64 hex digits>" or
// "sha512:<128 hex digits>" and returns it in lower case. It is Quarry's
// one reader of digests; its rules:
//
//   - spaces around the digest are ignored (a pasted value);
//   - the algorithm is required, in any case: a bare digest is refused,
//     because other algorithms (SHA3-256, BLAKE2s) print as many digits;
//   - the digits are hexadecimal in any case, exactly as many as the
//     algorithm produces.
//
// The error says what was wrong and how to write the digest.
func ParseDigest(s string) (Digest, error) {
	const form = "sha256:<64 hex digits> or sha512:<128 hex digits>"
	s = strings.TrimSpace(s)
	algo, hex, found := strings.Cut(s, ":")
	algo = strings.ToLower(algo)
	want, known := hexLen[algo]
	switch {
	case !found && algoOf(s) != "" && isHex(s):
		return Digest{}, fmt.Errorf("checksum %q must be %s; it has no algorithm: put %q in front", clip(s), form, algoOf(s)+":")
	case !found:
		return Digest{}, fmt.Errorf("checksum %q must be %s", clip(s), form)
	case !known:
		return Digest{}, fmt.Errorf("checksum %q must be %s; algorithm %q is not supported", clip(s), form, clip(algo))
	case !isHex(hex) || len(hex) != want:
		return Digest{}, fmt.Errorf("checksum %q: a %s digest is %d hex digits, not %q", clip(s), algo, want, clip(hex))
	}
	return Digest{Algo: algo, Hex: strings.ToLower(hex)}, nil
}

// Find returns the entry for fileName; see FindIn.
func Find(entries []Entry, fileName string) (Entry, error) {
	return FindIn("the checksum file", entries, fileName)
}

// FindIn returns the entry for fileName from a checksum file whose address
// (or other description) is source, used only in error messages. It tries,
// in order:
//
//  1. entries listed under exactly fileName;
//  2. entries whose base name is fileName's base name (Fedora and Rocky list
//     bare names; callers may pass a URL path);
//  3. the only entry of a file that lists just one: a per-image sidecar
//     such as CentOS Stream's "…-latest.x86_64.qcow2.SHA256SUM", which names
//     the dated build the "latest" link points to. If it describes another
//     file, verification fails with a mismatch; it never passes wrongly.
//
// When a file lists the name under both algorithms, SHA-512 is used. An
// error wraps ErrNoChecksum or ErrAmbiguous.
func FindIn(source string, entries []Entry, fileName string) (Entry, error) {
	fileName = cleanName(fileName)
	match := func(same func(Entry) bool) []Entry {
		var out []Entry
		for _, e := range entries {
			if same(e) {
				out = append(out, e)
			}
		}
		return out
	}
	found := match(func(e Entry) bool { return e.Name == fileName })
	if len(found) == 0 && fileName != "" {
		base := path.Base(fileName)
		found = match(func(e Entry) bool { return e.Name != "" && path.Base(e.Name) == base })
	}
	if len(found) == 0 && len(entries) == 1 {
		found = entries
	}
	if len(found) == 0 {
		return Entry{}, errorf(ErrNoChecksum, "no checksum for %s in %s (it lists %s)", fileName, source, listing(entries))
	}

	best := found[0]
	for _, e := range found[1:] {
		if e.Algo == SHA512 && best.Algo != SHA512 {
			best = e
		}
	}
	for _, e := range found {
		if e.Algo == best.Algo && e.Hex != best.Hex {
			return Entry{}, errorf(ErrAmbiguous, "%s lists different %s checksums for %s (under %s); give the image's checksum explicitly",
				source, best.Algo, fileName, names(found))
		}
	}
	return best, nil
}

// listing describes what a checksum file lists, for "not found" messages.
func listing(entries []Entry) string {
	switch len(entries) {
	case 0:
		return "no files"
	case 1:
		return "1 file: " + names(entries)
	}
	return fmt.Sprintf("%d files: %s", len(entries), names(entries))
}

// names lists up to four distinct names, quoted.
func names(entries []Entry) string {
	const show = 4
	var out []string
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.Name] {
			continue
		}
		seen[e.Name] = true
		if len(out) == show {
			return strings.Join(out, ", ") + ", …"
		}
		out = append(out, fmt.Sprintf("%q", e.Name))
	}
	return strings.Join(out, ", ")
}
