package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// newMigrateStoreCommand copies a control plane's state from SQLite into
// PostgreSQL. Like `quarry server` it works on the database itself, not
// through the API: it runs where the control plane's files are.
func newMigrateStoreCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate-store --from sqlite:PATH --to postgres://...",
		Short: "Copy the control plane's state from its SQLite file into an empty PostgreSQL database",
		Long: `Copy every record of a control plane's SQLite database (nodes and their
certificates, pools, images, jobs and their history, tokens, sessions, the
audit log) into a PostgreSQL database, check that every table holds as many
rows on both sides, and print the counts. The target must hold no records;
its schema is created if missing. The copy is one transaction: after an
error the target still holds no records.

Stop the control plane first: what it writes during or after the copy is not
in the target. Then start it with --database-url and the same --data-dir,
which keeps the CA and the admin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, ok := strings.CutPrefix(from, "sqlite:")
			if !ok || path == "" {
				return usageErrorf("--from %q: give sqlite:PATH, the quarry.db in the control plane's --data-dir", from)
			}
			if !cmd.Flags().Changed("to") {
				to = os.Getenv("QUARRY_DATABASE_URL")
			}
			if !sqlstore.IsPostgresURL(to) {
				return usageErrorf("--to: give the postgres://user@host:port/db URL of the target database")
			}
			// OpenSQLite would make an empty database of a wrong path.
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			ctx := cmd.Context()
			src, err := sqlstore.OpenSQLite(ctx, path)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := sqlstore.OpenPostgres(ctx, to)
			if err != nil {
				return err
			}
			defer dst.Close()
			counts, err := src.CopyTo(ctx, dst)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, c := range counts {
				fmt.Fprintf(w, "%-16s %d rows\n", c.Table, c.Rows)
			}
			fmt.Fprintln(w, "copied; every table holds the same number of rows in both databases")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the SQLite database to copy: sqlite:PATH (PATH is <data-dir>/quarry.db)")
	f.StringVar(&to, "to", "", "the PostgreSQL database to copy into (env QUARRY_DATABASE_URL)")
	return cmd
}
