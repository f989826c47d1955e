package sqlstore

import (
	"context"
	"strings"

	"github.com/quarry-project/quarry/internal/store"
)

// where collects the conditions of a list query and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// search matches rows where any of cols contains text. Only ASCII letters
// are folded: SQLite's LOWER folds nothing else, and the backends must
// agree.
func (w *where) search(text string, cols ...string) {
	if text == "" {
		return
	}
	// One LIKE over the columns joined by a line feed, which search text
	// (one line) does not hold: a tenth of the work of one LIKE a column
	// on a table scan, and no match can span two columns.
	w.add(`LOWER(`+strings.Join(cols, ` || '`+"\n"+`' || `)+`) LIKE ? ESCAPE '!'`, "%"+likeEscaper.Replace(asciiLower(text))+"%")
}

var likeEscaper = strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// qualified prefixes each column of cols (a comma-separated list) with
// table, for a join whose tables share column names.
func qualified(table, cols string) string {
	var out []string
	for c := range strings.SplitSeq(cols, ",") {
		out = append(out, table+"."+strings.TrimSpace(c))
	}
	return strings.Join(out, ", ")
}

// sql returns " WHERE …" or "".
func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return ` WHERE ` + strings.Join(w.conds, ` AND `)
}

// keyset is one paged list: its name in tokens, its sort columns and
// direction, and how a row's sort key is read back into a cursor.
type keyset[T any] struct {
	list string
	// cols is the unique sort key as a row value, "(pool_id, rel_path)";
	// desc orders it descending.
	cols string
	desc bool
	// strings and ints are how many of each the cursor holds; args turns a
	// cursor into the values of cols, in order.
	strings, ints int
	args          func(store.Cursor) []any
	cursor        func(T) store.Cursor
}

// page runs selectFrom ("SELECT … FROM t") with w and the cursor of p.Token
// and returns one page of rows and the next token. filter is what the
// token is bound to. One row more than the page is read, so the last page
// is known as such and has no next token.
func page[T any](ctx context.Context, s *Store, k keyset[T], selectFrom string, w where, filter any, p store.Page,
	scan func(scanner) (T, error)) ([]T, string, error) {
	limit, err := p.Limit()
	if err != nil {
		return nil, "", err
	}
	c, err := store.DecodeToken(k.list, filter, p.Token, k.strings, k.ints)
	if err != nil {
		return nil, "", err
	}
	op, dir := `>`, ``
	if k.desc {
		op, dir = `<`, ` DESC`
	}
	if p.Token != "" {
		args := k.args(c)
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")
		w.add(k.cols+` `+op+` (`+marks+`)`, args...)
	}
	order := strings.ReplaceAll(strings.Trim(k.cols, "()"), ",", dir+",") + dir
	query := selectFrom + w.sql() + ` ORDER BY ` + order + ` LIMIT ?`
	// Room for a page of up to 255 rows at once: a large page that few rows
	// fill should not hold room for a thousand.
	rows, err := queryCap(ctx, s.db, s.q(query), append(w.args, limit+1), min(limit+1, 256), scan)
	if err != nil || len(rows) <= limit {
		return rows, "", err
	}
	rows = rows[:limit]
	return rows, store.EncodeToken(k.list, filter, k.cursor(rows[limit-1])), nil
}
