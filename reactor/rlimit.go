//go:build unix

package reactor

import "syscall"

// RaiseNoFile lifts the process's open-file soft limit to its hard limit,
// so the process can hold as many connections as the system allows, and
// returns the soft limit in force afterwards (what it was, if it could not
// be raised).
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return nonNegative(rl.Cur), err
		}
		rl = want
	}
	return nonNegative(rl.Cur), nil
}

// nonNegative converts an rlimit value (uint64 on Linux and macOS, int64 on
// FreeBSD) to uint64.
func nonNegative[T int64 | uint64](v T) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// openFileLimit returns the process's open-file soft limit.
func openFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return nonNegative(rl.Cur), nil
}
