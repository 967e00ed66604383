package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// dial connects to addr and closes the connection in t.Cleanup.
func dial(t *testing.T, addr string, opts ...client.DialOption) *client.Conn {
	t.Helper()
	c, err := client.DialContext(context.Background(), addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxT returns a context that ends with the test or after d.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// lockStat returns the server's view of lock key (ok false when the key has
// neither holder nor waiters).
func lockStat(srv *reactortest.Server, key string) (lockcore.LockStat, bool) {
	for _, ls := range srv.Table.Stats(srv.Table.Now()).Locks {
		if ls.Key == key {
			return ls, true
		}
	}
	return lockcore.LockStat{}, false
}

// held reports whether some connection holds lock key on srv.
func held(srv *reactortest.Server, key string) bool {
	ls, ok := lockStat(srv, key)
	return ok && ls.OwnerConnID != 0
}

// tlsPair returns a server config with a fresh self-signed certificate for
// 127.0.0.1 and a client config that trusts it.
func tlsPair(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dflockd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	return server, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
