// Package errclass defines, once, the classes of failure Quarry's code acts
// on, and carries them across the agent API.
//
// The contract:
//   - A class is one of the *Class values below; errors.Is(err, NotFound)
//     asks whether err is of that class, and Of(err) returns its class.
//     Classes for which doing the same work again fails the same way also
//     match Terminal: long work (a download) stops on them instead of
//     retrying.
//   - New and Wrap make an error of a class. Its Error() is the message
//     written for people, saying what happened and what to do next; the
//     cause given to Wrap is internal detail, reachable with errors.Is/As
//     but not part of the message. A sentinel made with New (such as
//     store.ErrNotFound) can stand for a class: errors made from it match
//     both.
//   - Code is the one mapping from classes to Connect codes. ToConnect
//     turns an error into a Connect error with that code and the class as a
//     quarry.agent.v1.ErrorInfo detail; FromConnect turns such an error back
//     into one of the same class and message. Errors without a class are
//     internal: code internal, and no class on the other side.
package errclass

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// Class is a kind of failure. Its Error is its name, so that a class is
// itself an error for errors.Is.
type Class struct {
	name     string
	code     connect.Code
	wire     agentv1.ErrorClass
	terminal bool
}

func (c *Class) Error() string { return c.name }

// Is makes every terminal class match Terminal.
func (c *Class) Is(target error) bool { return target == Terminal && c.terminal }

// Code is the Connect code errors of the class are answered with.
func (c *Class) Code() connect.Code { return c.code }

// The classes. Each row is the whole definition: name, Connect code, wire
// value, and whether it is terminal. FailedPrecondition is not: the state
// it waits for (a pool mounted) may come, or another node may have it.
var (
	// Transient: one attempt failed; trying again may work.
	Transient = &Class{"transient failure", connect.CodeUnavailable, agentv1.ErrorClass_ERROR_CLASS_TRANSIENT, false}
	// Terminal: failed for good for a reason no narrower class names.
	Terminal = &Class{"failed for good", connect.CodeFailedPrecondition, agentv1.ErrorClass_ERROR_CLASS_TERMINAL, true}
	// NotFound: what was named does not exist.
	NotFound = &Class{"not found", connect.CodeNotFound, agentv1.ErrorClass_ERROR_CLASS_NOT_FOUND, true}
	// Conflict: it already exists, or changed under the writer.
	Conflict = &Class{"already exists", connect.CodeAlreadyExists, agentv1.ErrorClass_ERROR_CLASS_CONFLICT, true}
	// InvalidArgument: the request is wrong; the message says what to fix.
	InvalidArgument = &Class{"invalid argument", connect.CodeInvalidArgument, agentv1.ErrorClass_ERROR_CLASS_INVALID_ARGUMENT, true}
	// FailedPrecondition: the system is not in a state that allows it (a
	// pool not mounted, an object in use); the message says what to change.
	FailedPrecondition = &Class{"failed precondition", connect.CodeFailedPrecondition, agentv1.ErrorClass_ERROR_CLASS_FAILED_PRECONDITION, false}
	// NoSpace: the pool cannot hold the file.
	NoSpace = &Class{"not enough space in the pool", connect.CodeResourceExhausted, agentv1.ErrorClass_ERROR_CLASS_NO_SPACE, true}
	// PolicyRefused: the download URL policy refuses the address.
	PolicyRefused = &Class{"refused by the download URL policy", connect.CodePermissionDenied, agentv1.ErrorClass_ERROR_CLASS_POLICY_REFUSED, true}
	// ChecksumMismatch: the bytes are not the ones the checksum names.
	ChecksumMismatch = &Class{"checksum mismatch", connect.CodeFailedPrecondition, agentv1.ErrorClass_ERROR_CLASS_CHECKSUM_MISMATCH, true}
	// Fenced: another writer with a higher fence owns the job.
	Fenced = &Class{"the job is owned by another writer", connect.CodeAborted, agentv1.ErrorClass_ERROR_CLASS_FENCED, false}
	// Unavailable: nothing could do the work now (a node unreachable);
	// trying again later may work.
	Unavailable = &Class{"unavailable", connect.CodeUnavailable, agentv1.ErrorClass_ERROR_CLASS_UNAVAILABLE, false}
	// PermissionDenied: the caller is known but may not do this.
	PermissionDenied = &Class{"permission denied", connect.CodePermissionDenied, agentv1.ErrorClass_ERROR_CLASS_PERMISSION_DENIED, true}
	// Unauthenticated: the caller's credentials are missing or not good.
	Unauthenticated = &Class{"unauthenticated", connect.CodeUnauthenticated, agentv1.ErrorClass_ERROR_CLASS_UNAUTHENTICATED, true}
	// RateLimited: the caller made too many (failed) calls; wait.
	RateLimited = &Class{"too many requests", connect.CodeResourceExhausted, agentv1.ErrorClass_ERROR_CLASS_RATE_LIMITED, false}
)

// classes lists every class, for decoding.
var classes = []*Class{Transient, Terminal, NotFound, Conflict, InvalidArgument, FailedPrecondition,
	NoSpace, PolicyRefused, ChecksumMismatch, Fenced, Unavailable, PermissionDenied, Unauthenticated, RateLimited}

// classed is an error of a class with a message for people.
type classed struct {
	kind  error // a *Class, or an error of one (a sentinel)
	msg   string
	cause error // internal detail; may be nil
}

func (e *classed) Error() string { return e.msg }

// Unwrap returns the kind first, so that Of finds this error's class before
// any class its cause may have.
func (e *classed) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// New returns an error that matches kind with errors.Is and whose message
// is the formatted text. kind is a *Class, or an error made by New from one
// (a package's sentinel): the result then matches the sentinel and its
// class.
func New(kind error, format string, args ...any) error {
	return &classed{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Wrap is New with a cause: internal detail that errors.Is/As reach but the
// message does not show (say it in the message if people need it).
func Wrap(kind, cause error, format string, args ...any) error {
	return &classed{kind: kind, msg: fmt.Sprintf(format, args...), cause: cause}
}

// Of returns the class of err: the outermost one in its chain, or nil when
// it has none.
func Of(err error) *Class {
	if c, ok := errors.AsType[*Class](err); ok {
		return c
	}
	return nil
}

// Code returns the Connect code for err: its class's, canceled or
// deadline_exceeded for context errors, internal for anything else.
func Code(err error) connect.Code {
	switch c := Of(err); {
	case c != nil:
		return c.code
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeInternal
}

// Name is the class's name for people: "checksum mismatch".
func (c *Class) Name() string { return c.name }

// Wire returns the class of err as the agent API sends it outside errors
// (in a download's status); unspecified when it has none.
func Wire(err error) agentv1.ErrorClass {
	if c := Of(err); c != nil {
		return c.wire
	}
	return agentv1.ErrorClass_ERROR_CLASS_UNSPECIFIED
}

// FromWire returns an error of the class w with message msg, as Wire's
// counterpart; an unknown class gives an error without one.
func FromWire(w agentv1.ErrorClass, msg string) error {
	for _, c := range classes {
		if c.wire == w {
			return &classed{kind: c, msg: msg}
		}
	}
	return errors.New(msg)
}

// ToConnect returns err as a Connect error with Code(err), err's message,
// and an ErrorInfo detail naming its class (unspecified when it has none).
// A *connect.Error at the top of err is returned as is, and nil as nil.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := err.(*connect.Error); ok {
		return ce
	}
	ce := connect.NewError(Code(err), err)
	info := &agentv1.ErrorInfo{Message: err.Error()}
	if c := Of(err); c != nil {
		info.Class = c.wire
	}
	if d, derr := connect.NewErrorDetail(info); derr == nil {
		ce.AddDetail(d)
	}
	return ce
}

// FromConnect turns an error that carries an ErrorInfo detail (made by
// ToConnect on the other side of a call) back into an error of its class
// and message; ok is false when err carries none. The result has no class
// when the sender's error had none.
func FromConnect(err error) (_ error, ok bool) {
	ce, isConnect := errors.AsType[*connect.Error](err)
	if !isConnect {
		return nil, false
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		info, isInfo := v.(*agentv1.ErrorInfo)
		if !isInfo {
			continue
		}
		return FromWire(info.GetClass(), info.GetMessage()), true
	}
	return nil, false
}

// Failure is how a job's history records that the job failed with err:
// "failed (its class): its message".
func Failure(err error) string {
	what := "failed"
	if c := Of(err); c != nil {
		what += " (" + c.Name() + ")"
	}
	return what + ": " + err.Error()
}
