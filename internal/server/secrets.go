package server

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/store"
)

// caSecret is the name of the sealed CA in the store's secrets.
const caSecret = "ca"

// secretKeyPath is --secret-key-file, by default <data-dir>/secret.key.
func secretKeyPath(cfg Config) string {
	if cfg.SecretKeyFile != "" {
		return cfg.SecretKeyFile
	}
	return filepath.Join(cfg.DataDir, "secret.key")
}

// openSharedCA returns the CA every replica on one PostgreSQL database
// shares: kept in the database, sealed (AES-256-GCM) with the key in
// --secret-key-file. The first replica on an empty database creates the
// key file when missing and stores the CA — the one in <data-dir>/ca when
// there is one (an installation moved from SQLite keeps its agents), a new
// one otherwise. The others must be given the same key file.
func openSharedCA(ctx context.Context, cfg Config, st store.SecretStore) (*pki.CA, error) {
	path := secretKeyPath(cfg)
	sealed, err := st.GetSecret(ctx, caSecret)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("reading the CA from the database: %w", err)
	}
	stored := err == nil
	key, err := readSecretKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && stored:
		return nil, fmt.Errorf("the database already holds the control plane's CA, sealed with the secret key of the replica that "+
			"started first, and %s does not exist: copy that replica's key file (its --secret-key-file, by default "+
			"<data-dir>/secret.key) to %s and start again", path, path)
	case errors.Is(err, fs.ErrNotExist):
		if key, err = newSecretKey(path); err != nil {
			return nil, err
		}
		cfg.Logger.Info("created the secret key that seals the CA in the database; give every other replica a copy (--secret-key-file)", "path", path)
	case err != nil:
		return nil, err
	}
	if !stored {
		if sealed, err = storeCA(ctx, cfg, st, key); err != nil {
			return nil, err
		}
	}
	ca, err := unsealCA(sealed, key)
	if err != nil {
		return nil, fmt.Errorf("the secret key in %s does not open the CA in the database (%v): every replica needs the same "+
			"--secret-key-file; copy the file of the replica that started first", path, err)
	}
	cfg.Logger.Info("control plane CA loaded from the database", "ca_hash", ca.Hash())
	return ca, nil
}

// storeCA seals a CA into the database and returns what the database then
// holds: another replica starting at the same time may have won.
func storeCA(ctx context.Context, cfg Config, st store.SecretStore, key []byte) ([]byte, error) {
	dir := filepath.Join(cfg.DataDir, "ca")
	ca, found, err := pki.LoadCADir(dir)
	if err != nil {
		return nil, fmt.Errorf("the control plane's CA in %s: %w", dir, err)
	}
	if !found {
		if ca, err = pki.NewCA(time.Now()); err != nil {
			return nil, err
		}
	}
	sealed, err := sealCA(ca, key)
	if err != nil {
		return nil, err
	}
	switch err := st.CreateSecret(ctx, caSecret, sealed, time.Now()); {
	case errors.Is(err, store.ErrConflict):
		return st.GetSecret(ctx, caSecret)
	case err != nil:
		return nil, fmt.Errorf("storing the CA in the database: %w", err)
	}
	if found {
		cfg.Logger.Info("stored the CA of the data directory in the database, sealed", "dir", dir, "ca_hash", ca.Hash())
	} else {
		cfg.Logger.Info("created the control plane's CA in the database, sealed; agents enroll with join tokens (quarry token create --join)", "ca_hash", ca.Hash())
	}
	return sealed, nil
}

// sealedCA is the plaintext of the sealed CA.
type sealedCA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func sealCA(ca *pki.CA, key []byte) ([]byte, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(sealedCA{Cert: string(ca.PEM()), Key: string(keyPEM)})
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, []byte(caSecret)), nil
}

func unsealCA(sealed, key []byte) (*pki.CA, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("the sealed CA is truncated")
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(caSecret))
	if err != nil {
		return nil, errors.New("decryption failed: another key sealed it")
	}
	var s sealedCA
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, err
	}
	return pki.ParseCA([]byte(s.Cert), []byte(s.Key))
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// readSecretKey reads a key file: 32 bytes as 64 hex digits.
func readSecretKey(path string) ([]byte, error) {
	b, err := pki.ReadSecret(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("--secret-key-file %s does not hold a key (64 hex digits); copy the file of the replica that started first", path)
	}
	return key, nil
}

// newSecretKey makes a key and writes it to path, mode 0600.
func newSecretKey(path string) ([]byte, error) {
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the secret key's directory: %w", err)
	}
	if err := pki.WriteSecret(path, []byte(hex.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("writing the secret key %s: %w", path, err)
	}
	return key, nil
}
