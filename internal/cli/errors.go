package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/errclass"
)

// Exit codes, by the class of the failure (the README has this table).
// Scripts branch on these, so they never change meaning.
const (
	exitFailure     = 1 // anything not below: an internal error, a job that failed
	exitUsage       = 2 // the command line or the request is wrong (invalid_argument)
	exitUnavailable = 3 // the control plane cannot be reached, or nothing can do the work now
	exitNotFound    = 4 // what was named does not exist
	exitRefused     = 5 // no valid token, a role too small, a download URL refused by policy
	exitConflict    = 6 // it exists already, or the state does not allow it (in use, not mounted, no space)
)

// exitCodes maps Connect codes, the classes the API answers with, to exit
// codes; a code not listed exits with exitFailure.
var exitCodes = map[connect.Code]int{
	connect.CodeInvalidArgument:    exitUsage,
	connect.CodeOutOfRange:         exitUsage,
	connect.CodeUnavailable:        exitUnavailable,
	connect.CodeDeadlineExceeded:   exitUnavailable,
	connect.CodeNotFound:           exitNotFound,
	connect.CodeUnauthenticated:    exitRefused,
	connect.CodePermissionDenied:   exitRefused,
	connect.CodeAlreadyExists:      exitConflict,
	connect.CodeFailedPrecondition: exitConflict,
	connect.CodeAborted:            exitConflict,
	connect.CodeResourceExhausted:  exitConflict,
}

// usageError is a mistake on the command line: the usage line of the
// command is printed with it.
type usageError struct{ err error }

func (e *usageError) Error() string   { return e.err.Error() }
func (e *usageError) Unwrap() []error { return []error{errclass.InvalidArgument, e.err} }

// usageErrorf is a usage error with a formatted message.
func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err from cobra's argument and flag checks as a usage error.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// interrupted is why the invocation's context ended: a signal.
type interrupted struct{ sig os.Signal }

func (e *interrupted) Error() string { return e.sig.String() + " signal received" }

// exitCode is what the shell sees after sig: 128 + its number.
func (e *interrupted) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 130
}

// stoppedWatching is a watch ended by Ctrl-C: the job is not affected.
type stoppedWatching struct{ job string }

func (e *stoppedWatching) Error() string {
	return fmt.Sprintf("stopped watching; job %s keeps running (quarry job watch %s)", e.job, e.job)
}

// codeOf is the Connect code err answers to: the server's, the class of a
// local error, canceled for an interrupt, unknown for anything else.
func codeOf(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errclass.Of(err) != nil: // a local error, or a transport error connect wrapped
		return errclass.Code(err)
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeUnknown
}

// report writes err for a person ("error: …" and, for usage errors, the
// command's usage line) or as one JSON object {"code", "message"}, and
// returns the exit code. cause is why the invocation's context ended, if
// it did: an interrupted command exits 128+signal whatever its error.
func report(w io.Writer, cmd *cobra.Command, err error, asJSON bool, cause error) int {
	msg, code := describe(err), codeOf(err)
	exit, ok := exitCodes[code]
	if !ok {
		exit = exitFailure
	}
	var usage *usageError
	isUsage := errors.As(err, &usage)
	if isUsage {
		exit = exitUsage
	}
	var intr *interrupted
	if errors.As(cause, &intr) {
		exit, code = intr.exitCode(), connect.CodeCanceled
		// A call cut short says only "context canceled"; other errors
		// (a daemon's failed shutdown) keep their message.
		if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeCanceled {
			msg = "interrupted"
		}
	}
	if asJSON {
		b, _ := json.Marshal(struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{code.String(), msg})
		fmt.Fprintf(w, "%s\n", b)
		return exit
	}
	switch {
	case errors.As(err, new(*stoppedWatching)):
		fmt.Fprintln(w, msg)
	case isUsage && cmd != nil:
		line := cmd.UseLine()
		if cmd.HasSubCommands() {
			line = cmd.CommandPath() + " COMMAND"
		}
		fmt.Fprintf(w, "error: %s\nusage: %s\nRun '%s --help' for more.\n", msg, line, cmd.CommandPath())
	default:
		fmt.Fprintln(w, "error:", msg)
	}
	return exit
}

// describe turns an error into the sentence for a person: the message the
// server wrote, without the Connect code prefix a person does not need.
func describe(err error) string {
	var nq *notQuarry
	if errors.As(err, &nq) {
		return nq.Error()
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		if ce.Code() == connect.CodeUnavailable && errors.As(err, new(*net.OpError)) {
			return "cannot reach the control plane (" + ce.Message() + "); is `quarry server` running, and does --server point at it?"
		}
		return ce.Message()
	}
	return err.Error()
}

// jsonRequested reports whether args ask for -o json, for errors that
// happen before the flags are parsed (an unknown command or flag).
func jsonRequested(args []string) bool {
	for i, a := range args {
		if a == "--" {
			return false
		}
		switch {
		case a == "-o" || a == "--output":
			if i+1 < len(args) && args[i+1] == "json" {
				return true
			}
		case a == "-ojson" || a == "-o=json" || a == "--output=json":
			return true
		}
	}
	return false
}

// finishTree makes every command of the tree report mistakes on the command
// line as usage errors: wrong arguments, unknown or missing flags, and an
// unknown subcommand at any level, with suggestions. cobra itself checks
// subcommands only at the root and shows help, exit 0, for `image lst`.
func finishTree(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return asUsage(err) })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands():
			c.Args = cobra.ArbitraryArgs
			c.RunE = groupRun
		case c.Args != nil:
			check := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error { return asUsage(check(cmd, args)) }
		}
		// Required flags are checked here, before cobra would, so that a
		// missing one is a usage error too.
		pre := c.PreRunE
		c.PreRunE = func(cmd *cobra.Command, args []string) error {
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return asUsage(err)
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return asUsage(err)
			}
			if pre != nil {
				return pre(cmd, args)
			}
			return nil
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// groupRun runs a command that only groups others: alone it shows its
// help; with an argument that is no subcommand it fails with suggestions.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	cmd.SuggestionsMinimumDistance = 2
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	} else {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		msg += "; the commands are " + strings.Join(names, ", ")
	}
	return usageErrorf("%s", msg)
}
