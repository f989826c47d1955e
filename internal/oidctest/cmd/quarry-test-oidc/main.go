// Command quarry-test-oidc runs a real OpenID Connect provider on loopback
// for the dashboard's browser tests (see package oidctest). Once it
// listens it prints one line of JSON, {"issuer", "clientId",
// "clientSecret"}, and it serves until interrupted or terminated.
//
//	quarry-test-oidc --user u-ada:ada@example.com:quarry-admins --user u-nina:nina@example.com:staff
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/quarry-project/quarry/internal/oidctest"
)

type userFlags []oidctest.User

func (u *userFlags) String() string { return fmt.Sprint(len(*u), " users") }
func (u *userFlags) Set(s string) error {
	v, err := oidctest.ParseUser(s)
	if err == nil {
		*u = append(*u, v)
	}
	return err
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve the provider on (loopback)")
	var users userFlags
	flag.Var(&users, "user", "SUBJECT:EMAIL:GROUP,GROUP… of a user who can sign in; repeatable")
	flag.Parse()
	if err := run(*listen, users); err != nil {
		fmt.Fprintln(os.Stderr, "quarry-test-oidc:", err)
		os.Exit(1)
	}
}

func run(listen string, users []oidctest.User) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	p, err := oidctest.Start(ln, users)
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{
		"issuer": p.Issuer(), "clientId": p.ClientID(), "clientSecret": p.ClientSecret(),
	}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
