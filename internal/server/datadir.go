package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// dbFiles are the SQLite database and the files SQLite keeps beside it.
var dbFiles = []string{"quarry.db", "quarry.db-wal", "quarry.db-shm"}

// secureDataDir keeps the database to the control plane's user: it holds
// token and session hashes, CSRF tokens and the audit log. A data
// directory others may enter loses their access, and database files
// anyone else may read become 0600; each fix is logged as a warning.
// Fixing rather than refusing to start keeps an upgraded installation
// running, and the server owns these files, so nobody else depends on
// reading them. A new database is created 0600 before SQLite opens it,
// and SQLite gives its -wal and -shm files the database's mode.
func secureDataDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if mode := fi.Mode().Perm(); mode&0o007 != 0 {
		if err := os.Chmod(dir, mode&^0o007); err != nil {
			return fmt.Errorf("data directory %s is open to every user (mode %04o) and could not be closed: %w; chmod o-rwx it", dir, mode, err)
		}
		log.Warn("the data directory was open to every user; removed their access", "path", dir, "mode_was", fmt.Sprintf("%04o", mode), "mode", fmt.Sprintf("%04o", mode&^0o007))
	}
	for _, name := range dbFiles {
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("database file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("database file %s is not a regular file (%s); move it away", path, fi.Mode().Type())
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return fmt.Errorf("database file %s is readable by others (mode %04o) and could not be made 0600: %w", path, mode, err)
			}
			log.Warn("a database file was readable by others; made it 0600", "path", path, "mode_was", fmt.Sprintf("%04o", mode))
		}
	}
	// A new database starts as an empty file of mode 0600 (an empty file is
	// an empty SQLite database).
	f, err := os.OpenFile(filepath.Join(dir, dbFiles[0]), os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating the database: %w", err)
	}
	return f.Close()
}
