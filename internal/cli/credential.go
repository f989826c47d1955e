package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
)

// defaultDataDir is where `quarry server` keeps its state unless told.
const defaultDataDir = "/var/lib/quarry"

// devDataDir is where `quarry server --dev` keeps its state unless told,
// and where the CLI looks for its admin token: one directory per user, so
// two people trying dev mode on one machine do not collide on a directory
// the first one owns. Not $XDG_RUNTIME_DIR: that is a small tmpfs emptied at
// logout, and the dev pool holds multi-gigabyte images.
func devDataDir() string {
	return filepath.Join(os.TempDir(), "quarry-dev-"+strconv.Itoa(os.Getuid()))
}

// credential is the token an invocation sends and where it came from; as
// a client interceptor it turns the server's "unauthenticated" into advice.
type credential struct {
	token  string
	source string
	// unreadable are admin token files that exist but could not be read.
	unreadable []string
}

// credential finds the token to send to the server at base: --token-file,
// else $QUARRY_TOKEN, else, when the server runs on this host, the admin
// token it wrote into its data directory (production, then dev mode).
// The admin token files are never sent to another host.
func (g *globals) credential(base string) (*credential, error) {
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, usageErrorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, usageErrorf("--token-file %s is empty", g.tokenFile)
		}
		return &credential{token: tok, source: g.tokenFile}, nil
	}
	if tok := strings.TrimSpace(os.Getenv("QUARRY_TOKEN")); tok != "" {
		return &credential{token: tok, source: "QUARRY_TOKEN"}, nil
	}
	c := &credential{}
	if !onThisHost(base) {
		return c, nil
	}
	for _, dir := range []string{defaultDataDir, devDataDir()} {
		path := auth.AdminTokenPath(dir)
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			c.unreadable = append(c.unreadable, path)
		case strings.TrimSpace(string(b)) != "":
			c.token, c.source = strings.TrimSpace(string(b)), path
			return c, nil
		}
	}
	return c, nil
}

// onThisHost reports whether the server URL base names this machine.
func onThisHost(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if name, err := os.Hostname(); err == nil && strings.EqualFold(host, name) {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// explain rewrites a refusal of this credential as what to do about it.
func (c *credential) explain(err error) error {
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		return err
	}
	if c.token == "" {
		msg := "the control plane needs a token: set QUARRY_TOKEN or run on the server host (admin token in <data-dir>/admin.token)"
		if len(c.unreadable) > 0 {
			msg += "; cannot read " + strings.Join(c.unreadable, " or ") + " as this user"
		}
		return connect.NewError(connect.CodeUnauthenticated, errors.New(msg))
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s (the token from %s)", ce.Message(), c.source))
	}
	return err
}

func (c *credential) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, c.explain(err)
	}
}

func (c *credential) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return explainedStream{next(ctx, spec), c}
	}
}

func (c *credential) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// explainedStream explains a refusal that arrives on a stream.
type explainedStream struct {
	connect.StreamingClientConn
	c *credential
}

func (s explainedStream) Receive(m any) error {
	return s.c.explain(s.StreamingClientConn.Receive(m))
}
