package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/quarry-project/quarry/internal/checksum"
)

// maxFileSize bounds a catalog file; a real one is a few kilobytes.
const maxFileSize = 4 << 20

// The keys catalog files may use. They are checked by hand, not with
// json.Decoder.DisallowUnknownFields, so that an error can name the entry
// and suggest the right key, and because encoding/json would otherwise
// accept "URL" or "Url" for "url".
var (
	rootKeys  = []string{"entries"}
	entryKeys = jsonKeys(reflect.TypeFor[Entry]())
	osKeys    = jsonKeys(reflect.TypeFor[OS]())
)

// readFile reads and validates one catalog file:
//
//	{"entries": [{"id": "…", "name": "…", "url": "…", "format": "qcow2", …}]}
func readFile(name string) ([]Entry, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("catalog file %s: %s", name, fmt.Sprintf(format, args...))
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("catalog file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("catalog file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fail("larger than %d bytes", maxFileSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fail(`is empty; write {"entries": [{"id": …}, …]}`)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		return nil, fail(`must hold one JSON object, {"entries": [{"id": …}, …]}`)
	}

	var root map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, fail("%s", jsonError(data, err))
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, fail("%s", atOffset(data, int64(len(data)-len(rest)), "unexpected text after the closing }"))
	}
	if err := checkKeys(root, rootKeys, ""); err != nil {
		return nil, fail("%v", err)
	}
	raw, ok := root["entries"]
	if !ok {
		return nil, fail(`has no "entries" list; write {"entries": [{"id": …}, …]}`)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(raw, &raws); err != nil || raws == nil {
		return nil, fail(`"entries" must be a list of objects`)
	}

	var (
		entries []Entry
		errs    []error
		seen    = map[string]int{} // id → entry number
	)
	for i, r := range raws {
		e, err := decodeEntry(r)
		if err == nil {
			err = e.Validate()
		}
		label := fmt.Sprintf("entry %d", i+1)
		if e.ID != "" {
			label += fmt.Sprintf(" (%q)", e.ID)
		}
		if err == nil {
			if j, dup := seen[e.ID]; dup {
				err = fmt.Errorf("entry %d has the same id; ids must be unique in a file", j)
			}
		}
		if err != nil {
			errs = append(errs, fail("%s: %v", label, err))
			if len(errs) == 10 {
				break
			}
			continue
		}
		seen[e.ID] = i + 1
		if e.Checksum != "" {
			d, _ := checksum.ParseDigest(e.Checksum) // Validate checked it
			e.Checksum = d.String()
		}
		e.Origin = name
		entries = append(entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return entries, nil
}

// decodeEntry decodes one element of "entries". On an error the entry's
// id is still returned when it could be read, for the message.
func decodeEntry(raw json.RawMessage) (Entry, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return Entry{}, errors.New(`is not an object; write {"id": …, "name": …, "url": …, "format": …}`)
	}
	var e Entry
	if id, ok := m["id"]; ok {
		_ = json.Unmarshal(id, &e.ID) // only for messages; checked below
	}
	if err := checkKeys(m, entryKeys, ""); err != nil {
		return e, err
	}
	if o, ok := m["os"]; ok {
		var om map[string]json.RawMessage
		if err := json.Unmarshal(o, &om); err != nil || om == nil {
			return e, errors.New(`"os" must be an object: {"distro": …, "version": …, "arch": …}`)
		}
		if err := checkKeys(om, osKeys, "os."); err != nil {
			return e, err
		}
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return e, fmt.Errorf("%q must be a %s, not a %s", te.Field, kindName(te.Type), te.Value)
		}
		return e, err
	}
	return e, nil
}

// checkKeys rejects keys not in known, suggesting the nearest one.
func checkKeys(m map[string]json.RawMessage, known []string, prefix string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.Contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("unknown field %q", prefix+k)
		best, bestD := "", 4
		for _, w := range known {
			if d := distance(strings.ToLower(k), strings.ToLower(w)); d < bestD {
				best, bestD = w, d
			}
		}
		if best != "" {
			return fmt.Errorf("%s; did you mean %q?", msg, prefix+best)
		}
		return fmt.Errorf("%s; known fields are %s", msg, strings.Join(known, ", "))
	}
	return nil
}

// jsonKeys lists the JSON names of a struct's fields.
func jsonKeys(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice:
		return "list"
	}
	return t.String()
}

// jsonError turns a decoding error into a message with a line and column.
func jsonError(data []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return atOffset(data, se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early; is a } or ] missing?"
	case errors.As(err, &te):
		return atOffset(data, te.Offset, fmt.Sprintf("expected %s, found %s", kindName(te.Type), te.Value))
	}
	return err.Error()
}

// atOffset prefixes msg with the line and column of a byte offset.
func atOffset(data []byte, off int64, msg string) string {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d: %s", line, col, msg)
}
