package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfigUnusableAuthToken: a secret no client can ever send was
// accepted silently. A request line is at most 256 bytes and ends at the
// first '\n', so a longer secret, or one with a newline inside, turned the
// port into one that answers error_auth to everyone (see
// reactor.TestNewRefusesUnusableAuthToken). It is one line naming the flag.
func TestConfigUnusableAuthToken(t *testing.T) {
	long := strings.Repeat("a", 300)
	longFile := writeFile(t, "long-token", long+"\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "token over 256 bytes", args: []string{"--auth-token", long}, want: "--auth-token"},
		{name: "token env over 256 bytes", env: map[string]string{"DFLOCKD_AUTH_TOKEN": long}, want: "DFLOCKD_AUTH_TOKEN"},
		{name: "token with a newline inside", args: []string{"--auth-token", "abc\ndef"}, want: "--auth-token"},
		{name: "token file line over 256 bytes", args: []string{"--auth-token-file", longFile}, want: "--auth-token-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(t, tt.args, tt.env)
			if err == nil {
				t.Fatalf("accepted: the server would run with a %d-byte secret no client can present", len(o.AuthToken))
			}
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

// TestConfigErrorsStayOneLine: hostile text in a flag value or name
// must still give one line naming the flag. A newline in a file path or a
// flag name was echoed raw, and a host with a newline was accepted and
// failed only at listen time.
func TestConfigErrorsStayOneLine(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "token file path with a newline", args: []string{"--auth-token-file", "/nonexistent\ndflockd: listening on 0.0.0.0:6388"}, want: "--auth-token-file"},
		{name: "unknown flag with a newline", args: []string{"--bogus\ninvalid --port"}, want: "bogus"},
		{name: "host with a newline", args: []string{"--host", "127.0.0.1\nevil"}, want: "--host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.args, nil)
			require.Error(t, err, "accepted")
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n", "not one line: %q", err.Error())
		})
	}
}
