package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// maxPageSize is the largest page the server hands out.
const maxPageSize = 1000

// fetchPage asks for one page of a list: at most size rows after token.
type fetchPage[T any] func(ctx context.Context, size int32, token string) (rows []T, next string, err error)

// pageFlags are --limit and --all of a list command.
type pageFlags struct {
	limit int
	all   bool
}

func (f *pageFlags) register(cmd *cobra.Command, one, many string, limit int) {
	cmd.Flags().IntVar(&f.limit, "limit", limit, fmt.Sprintf("show at most this many %s (the server sends them %d a page at most)", many, maxPageSize))
	cmd.Flags().BoolVar(&f.all, "all", false, "show every "+one+", however many pages that takes")
	cmd.MarkFlagsMutuallyExclusive("limit", "all")
}

// collect follows the pages of a list until f's limit, or the last page
// with --all. next is the token of the page after what it returns; "" when
// nothing is left.
func collect[T any](ctx context.Context, f pageFlags, fetch fetchPage[T]) (rows []T, next string, err error) {
	if !f.all && f.limit < 1 {
		return nil, "", usageErrorf("--limit %d: give 1 or more, or --all", f.limit)
	}
	for {
		size := maxPageSize
		if !f.all {
			size = min(size, f.limit-len(rows))
		}
		page, tok, err := fetch(ctx, int32(size), next)
		if err != nil {
			return nil, "", err
		}
		rows, next = append(rows, page...), tok
		if next == "" || !f.all && len(rows) >= f.limit {
			return rows, next, nil
		}
	}
}

// listAll reads every page of a list, for commands that look for one row.
func listAll[T any](ctx context.Context, fetch fetchPage[T]) ([]T, error) {
	rows, _, err := collect(ctx, pageFlags{all: true}, fetch)
	return rows, err
}

// noteMore tells a person reading a table that it is cut short, on the
// error stream so that the table stays clean for scripts.
func noteMore(w io.Writer, next string, shown int, noun string) {
	if next != "" {
		fmt.Fprintf(w, "%d %s shown and more remain: --all shows every one, --limit N up to N.\n", shown, noun)
	}
}
