package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBadFilesExit: odd files exit 2 with one line naming the flag.
func TestBadFilesExit(t *testing.T) {
	t.Parallel()
	cert1, _, _ := selfSignedCert(t)
	_, key2, _ := selfSignedCert(t)
	empty := writeFile(t, "fence-empty", "")
	neg := writeFile(t, "fence-neg", "-5\n")
	over := writeFile(t, "fence-over", "18446744073709551616\n")
	emptyTok := writeFile(t, "tok", "\n\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cert does not match key", []string{"--tls-cert", cert1, "--tls-key", key2}, "--tls-cert"},
		{"key is the cert", []string{"--tls-cert", cert1, "--tls-key", cert1}, "--tls-cert"},
		{"fence file empty", []string{"--fence-state-file", empty}, "--fence-state-file"},
		{"fence file negative", []string{"--fence-state-file", neg}, "--fence-state-file"},
		{"fence file over 2^64", []string{"--fence-state-file", over}, "--fence-state-file"},
		{"token file blank", []string{"--auth-token-file", emptyTok}, "--auth-token-file"},
		{"token file is dir", []string{"--auth-token-file", t.TempDir()}, "--auth-token-file"},
		{"cert is dir", []string{"--tls-cert", t.TempDir(), "--tls-key", key2}, "--tls-cert"},
		{"token file is endless", []string{"--auth-token-file", "/dev/zero"}, "--auth-token-file: /dev/zero: larger than 64 KiB"},
		{"fence file is endless", []string{"--fence-state-file", "/dev/zero"}, "--fence-state-file: /dev/zero: larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, procConfig{args: append([]string{"--port", strconv.Itoa(freePort(t))}, tt.args...)})
			assert.Equal(t, 2, p.waitExit(t, 10*time.Second))
			stderr := p.stderr.String()
			require.True(t, strings.HasSuffix(stderr, "\n"), "%q", stderr)
			assert.NotContains(t, strings.TrimSuffix(stderr, "\n"), "\n", "one line: %q", stderr)
			assert.Contains(t, stderr, tt.want)
		})
	}
}
