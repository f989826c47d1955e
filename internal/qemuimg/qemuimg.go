// Package qemuimg runs qemu-img, from Debian's qemu-utils, for the agent's
// image conversions: its version, a file's header as qemu-img reads it,
// `qemu-img convert -p` with its progress, and `qemu-img check`. Every run
// names the source format explicitly (qemu-img never probes a file an
// untrusted party may have written), ends with its context (the process is
// killed), and fails with qemu-img's own message.
package qemuimg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Missing is the advice an operator gets where qemu-img is not installed.
const Missing = "qemu-img is not installed: install Debian's qemu-utils (apt-get install qemu-utils)"

// Tool is one qemu-img binary.
type Tool struct {
	// Path is the binary; Version what it reported ("7.2.22").
	Path    string
	Version string
}

// Find looks bin up (a path, or a name on PATH; "" is "qemu-img") and asks
// it for its version. The error says what to install when there is none.
func Find(ctx context.Context, bin string) (Tool, error) {
	if bin == "" {
		bin = "qemu-img"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return Tool{}, fmt.Errorf("%s (%v)", Missing, err)
	}
	out, err := run(ctx, exec.CommandContext(ctx, p, "--version"))
	if err != nil {
		return Tool{}, err
	}
	v, ok := parseVersion(out)
	if !ok {
		return Tool{}, fmt.Errorf("%s --version answered %q, not a qemu-img version", p, firstLine(out))
	}
	return Tool{Path: p, Version: v}, nil
}

var versionRE = regexp.MustCompile(`qemu-img version (\d+\.\d+(?:\.\d+)?)`)

func parseVersion(out []byte) (string, bool) {
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

// Info is what `qemu-img info` says of a file.
type Info struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	FormatSpecific  struct {
		Type string `json:"type"`
		Data struct {
			Extents []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// Info reads the header of src, an open file, as format.
func (t Tool) Info(ctx context.Context, format string, src *os.File) (Info, error) {
	cmd := exec.CommandContext(ctx, t.Path, "info", "-f", format, "--output=json", fdPath)
	cmd.ExtraFiles = []*os.File{src}
	out, err := run(ctx, cmd)
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(out, &info); err != nil {
		return Info{}, fmt.Errorf("qemu-img info: %v", err)
	}
	return info, nil
}

// SelfContained returns an error when the image reads other files than
// itself: a backing file, or extents of a vmdk in other files. Converting
// such an image would read whatever those names point at.
func (i Info) SelfContained() error {
	if i.BackingFilename != "" {
		return fmt.Errorf("the image has a backing file (%s); Quarry converts only self-contained images", i.BackingFilename)
	}
	for _, e := range i.FormatSpecific.Data.Extents {
		if e.Filename != fdPath {
			return fmt.Errorf("the %s image keeps data in another file (%s); Quarry converts only self-contained images", i.Format, e.Filename)
		}
	}
	return nil
}

// fdPath is how qemu-img names the source: the first of cmd.ExtraFiles,
// opened by the caller inside the pool root, so no symlink in the pool
// leads qemu-img elsewhere.
const fdPath = "/dev/fd/3"

// Convert writes src (an open file in srcFormat) to the new file dst in
// format, calling progress with the percentage qemu-img -p reports.
func (t Tool) Convert(ctx context.Context, srcFormat string, src *os.File, format, dst string, progress func(percent float64)) error {
	cmd := exec.CommandContext(ctx, t.Path, "convert", "-p", "-f", srcFormat, "-O", format, fdPath, dst)
	cmd.ExtraFiles = []*os.File{src}
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	readProgress(stdout, progress)
	if err := cmd.Wait(); err != nil {
		return failure(ctx, "convert", err, stderr.Bytes())
	}
	return nil
}

// Check runs `qemu-img check` on file, in format, and returns its summary.
func (t Tool) Check(ctx context.Context, format, file string) (string, error) {
	out, err := run(ctx, exec.CommandContext(ctx, t.Path, "check", "-f", format, "--output=json", file))
	if err != nil {
		return "", err
	}
	var r struct {
		CheckErrors int   `json:"check-errors"`
		Corruptions int   `json:"corruptions"`
		Leaks       int   `json:"leaks"`
		Clusters    int64 `json:"total-clusters"`
		Allocated   int64 `json:"allocated-clusters"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", fmt.Errorf("qemu-img check: %v", err)
	}
	if r.CheckErrors+r.Corruptions+r.Leaks > 0 {
		return "", fmt.Errorf("qemu-img check found %d corruption(s), %d leak(s), %d check error(s)", r.Corruptions, r.Leaks, r.CheckErrors)
	}
	return fmt.Sprintf("qemu-img check: no errors, %d of %d clusters allocated", r.Allocated, r.Clusters), nil
}

var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// readProgress reads qemu-img -p's output, "    (12.34/100%)\r" over and
// over, until it ends.
func readProgress(r io.Reader, progress func(float64)) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		if m := progressRE.FindSubmatch(sc.Bytes()); m != nil && progress != nil {
			if p, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
				progress(p)
			}
		}
	}
	io.Copy(io.Discard, r) // a line too long for the scanner: keep the pipe flowing
}

func run(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return nil, failure(ctx, cmd.Args[1], err, stderr.Bytes())
	}
	return out, nil
}

// failure is a failed run, with what qemu-img said.
func failure(ctx context.Context, verb string, err error, stderr []byte) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		return fmt.Errorf("qemu-img %s: %w", verb, err)
	}
	return fmt.Errorf("qemu-img %s: %s", verb, strings.ReplaceAll(msg, "\n", "; "))
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}

// ErrUnsupported classes a conversion Quarry does not do.
var ErrUnsupported = errors.New("unsupported conversion")

// CheckPair returns nil when Quarry converts from into to: qcow2 ↔ raw,
// and vmdk or vhdx to qcow2.
func CheckPair(from, to string) error {
	switch {
	case from == "qcow2" && to == "raw", from == "raw" && to == "qcow2",
		(from == "vmdk" || from == "vhdx") && to == "qcow2":
		return nil
	case from == to:
		return fmt.Errorf("%w: the image is %s already", ErrUnsupported, from)
	}
	return fmt.Errorf("%w: %s to %s (Quarry converts qcow2 to raw, raw to qcow2, vmdk or vhdx to qcow2)", ErrUnsupported, orUnknown(from), orUnknown(to))
}

func orUnknown(f string) string {
	if f == "" {
		return "an unknown format"
	}
	return f
}
