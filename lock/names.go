package lock

import "github.com/etcdlock/etcdlock/internal/keys"

// ValidateName returns nil if name can name a lock, and otherwise the error
// matching ErrInvalidName that the constructors and Inspect return for it.
// It does no I/O.
func ValidateName(name string) error { return public.Err(keys.ValidateName(name)) }

// ValidateNamespace returns nil if ns can prefix a lock's keys (see
// WithNamespace), and otherwise the error matching ErrInvalidNamespace that
// the constructors and Inspect return for it. It does no I/O.
func ValidateNamespace(ns string) error { return public.Err(keys.ValidateNamespace(ns)) }

// DefaultHolder returns the holder description a lock stores in its key
// unless WithHolder gives one, and an election candidate's value unless
// it gives one: "host:pid".
func DefaultHolder() string { return keys.Holder() }
