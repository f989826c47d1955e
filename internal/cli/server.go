package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/devmode"
	"github.com/quarry-project/quarry/internal/server"
)

func newServerCommand() *cobra.Command {
	var (
		cfg            server.Config
		dev            bool
		logLevel       string
		oidcSecretFile string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (API, web page, health checks of every node)",
		Long: `Run the control plane. One listener serves the Connect API (Connect, gRPC and
gRPC-Web; HTTP/1.1 and h2c), the web page at /, /metrics, /healthz and /readyz.

With --dev, also run an agent in-process, register it as node "dev", and create
the pool "local" under the data directory: everything on one machine, on
loopback only, for a first try.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg.Logger, cfg.Version = log, Version
			if err := servePprof(log); err != nil {
				return err
			}
			log.Debug("runtime", "gogc", setServerGC(), "gomaxprocs", setServerProcs())
			switch {
			case cfg.ScanInterval == 0:
				cfg.ScanInterval = -1 // the flag's 0 means off; the config's means default
			case cfg.ScanInterval < 0:
				return usageErrorf("--scan-interval %v: give a positive duration, or 0 to turn periodic scans off", cfg.ScanInterval)
			}
			if cfg.ScanDelay <= 0 {
				return usageErrorf("--scan-delay %v: give a positive duration", cfg.ScanDelay)
			}
			// Read here rather than as the flag's default, so that --help
			// never prints a password from the environment.
			if !cmd.Flags().Changed("database-url") {
				cfg.DatabaseURL = os.Getenv("QUARRY_DATABASE_URL")
			}
			if cfg.LeaseTTL < time.Second {
				return usageErrorf("--lease-ttl %v: give at least 1s (the leader renews it every third of it)", cfg.LeaseTTL)
			}
			if oidcSecretFile != "" {
				b, err := os.ReadFile(oidcSecretFile)
				if err != nil {
					return fmt.Errorf("--oidc-client-secret-file: %w", err)
				}
				cfg.OIDC.ClientSecret = strings.TrimSpace(string(b))
			}
			if cfg.OIDC.Issuer == "" && cmd.Flags().Changed("oidc-client-id") {
				return usageErrorf("--oidc-client-id needs --oidc-issuer")
			}
			if dev && (cfg.TLSAuto || cfg.TLSCertFile != "" || cfg.TLSKeyFile != "") {
				return usageErrorf("--dev serves plain HTTP on loopback; leave out --tls-auto, --tls-cert and --tls-key")
			}
			if dev {
				if !cmd.Flags().Changed("listen") {
					cfg.Listen = "127.0.0.1:8080"
				}
				if !cmd.Flags().Changed("data-dir") {
					cfg.DataDir = devDataDir()
					if err := checkOwnDir(cfg.DataDir); err != nil {
						return err
					}
				}
			}
			if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
				return err
			}
			if dev {
				return devmode.Run(cmd.Context(), cfg, cmd.OutOrStdout(), nil)
			}
			srv, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":8080", "address of the API and web page (with --dev: 127.0.0.1:8080)")
	f.StringVar(&cfg.DataDir, "data-dir", defaultDataDir, "directory for the database (with --dev: $TMPDIR/quarry-dev-$UID)")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://user:password@host:5432/db?sslmode=...) instead of SQLite in --data-dir (env QUARRY_DATABASE_URL)")
	f.StringVar(&cfg.SecretKeyFile, "secret-key-file", "", "with --database-url: the key that seals the CA in the database (default <data-dir>/secret.key; the first replica creates it, give the others a copy)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 6*time.Second, "with several replicas: how long the leader lease lasts unrenewed; a lost leader is replaced within about 7/6 of it")
	f.DurationVar(&cfg.HealthInterval, "health-interval", 5*time.Second, "how often every node is checked")
	f.DurationVar(&cfg.ScanInterval, "scan-interval", 5*time.Minute, "how often every pool is scanned for ISOs (0 turns periodic scans off; agents' file events and manual scans still work)")
	f.DurationVar(&cfg.ScanDelay, "scan-delay", 5*time.Second, "wait before the first scan of every pool after start")
	f.StringArrayVar(&cfg.CatalogFiles, "catalog", nil, "JSON file of catalog entries to add to (or override in) the built-in catalog; repeatable")
	f.DurationVar(&cfg.CatalogRefresh, "catalog-refresh", 6*time.Hour, "how often upstream is asked whether a catalog image present in a pool has a new build, which is then downloaded next to the old one (0 turns periodic checks off; quarry catalog refresh still works)")
	f.IntVar(&cfg.CatalogKeep, "catalog-keep", 2, "builds of a catalog image kept per pool after a refresh; older ones are deleted when nothing uses them")
	f.StringVar(&cfg.URLAllow, "url-allow", "", "download only from these hosts and CIDRs (comma-separated; *.example.com allowed)")
	f.StringVar(&cfg.URLDeny, "url-deny", "", "never download from these hosts and CIDRs (comma-separated)")
	f.BoolVar(&cfg.AllowLoopbackURLs, "allow-loopback-urls", false, "let downloads reach loopback addresses (a mirror on the node itself; link-local and metadata addresses stay refused)")
	f.IntVar(&cfg.MaxDownloadsPerNode, "max-downloads-per-node", 2, "downloads one node runs at once")
	f.IntVar(&cfg.MaxDownloads, "max-downloads", 8, "downloads running at once in the whole cluster")
	f.IntVar(&cfg.DownloadMaxAttempts, "download-max-attempts", 10, "failed attempts in a row without progress after which a download fails")
	f.DurationVar(&cfg.DownloadRetryWindow, "download-retry-window", 24*time.Hour, "longest a download keeps retrying without progress before it fails")
	f.StringArrayVar(&cfg.TrustedProxies, "trusted-proxy", nil, "reverse proxy (CIDR or address) whose Forwarded/X-Forwarded-For/X-Forwarded-Proto headers give the client's address and scheme; repeatable")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve the API over TLS with this PEM certificate chain (reloaded when the file changes)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "the PEM private key of --tls-cert (reloaded when the file changes)")
	f.BoolVar(&cfg.TLSAuto, "tls-auto", false, "serve the API over TLS with a certificate from the control plane's CA, renewed by itself; clients verify it with the CA's pin")
	f.StringArrayVar(&cfg.TLSNames, "tls-name", nil, "with --tls-auto: a DNS name or address clients reach the API at (besides this host's name and its listen addresses); repeatable")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "serve plain HTTP on a non-loopback --listen without the warning at every start")
	f.DurationVar(&cfg.UploadExpiry, "upload-expiry", 24*time.Hour, "an upload nothing was sent to for this long is removed with its partial file")
	f.IntVar(&cfg.MaxUploadsPerNode, "max-uploads-per-node", 4, "uploads in progress at once on one node")
	f.IntVar(&cfg.MaxUploads, "max-uploads", 16, "uploads in progress at once in the whole cluster")
	f.StringVar(&cfg.OIDC.Issuer, "oidc-issuer", "", "OpenID Connect issuer URL: the dashboard offers single sign-on with it")
	f.StringVar(&cfg.OIDC.ClientID, "oidc-client-id", "", "the client id Quarry is registered with at --oidc-issuer")
	f.StringVar(&oidcSecretFile, "oidc-client-secret-file", "", "file holding the client secret of --oidc-client-id (none for a public client)")
	f.StringVar(&cfg.OIDC.RedirectURL, "oidc-redirect-url", "", "callback URL registered at the provider (default: https?://<host the browser used>/auth/oidc/callback)")
	f.StringVar(&cfg.OIDC.RoleClaim, "oidc-role-claim", "groups", "ID token claim holding the user's groups (a string or a list)")
	f.StringVar(&cfg.OIDC.AdminGroup, "oidc-admin-group", "", "members of this group sign in as admin")
	f.StringVar(&cfg.OIDC.OperatorGroup, "oidc-operator-group", "", "members of this group sign in as operator (unless admin)")
	f.StringVar(&cfg.OIDC.ViewerGroup, "oidc-viewer-group", "", "members of this group sign in as viewer (unless more); users in none of the groups are refused")
	f.BoolVar(&dev, "dev", false, "run the control plane, an agent and a local pool on this machine")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// newLogger returns a text logger on stderr at the given level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, usageErrorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// checkOwnDir refuses a shared-temp-dir path another user could have made
// first: whoever owns it could plant a CA or read the admin token.
func checkOwnDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || (ok && int(st.Uid) != os.Getuid()) || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory owned by you and writable only by you; remove it or pass --data-dir", dir)
	}
	return nil
}
