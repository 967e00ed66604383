package client

import (
	"hash/crc32"
)

// ShardFunc maps a key to the index of the server that owns it, given the
// number of servers. Every client of a fleet must use the same function
// and the same server list in the same order: mutual exclusion holds per
// server, so two clients that send one key to different servers can both
// hold it.
//
// Changing the function or the list moves keys to other servers. A lock
// held during the change stays on its old server until released or
// expired, while clients already switched acquire the same key on the new
// server — at once, with nothing to stop them — and fence numbers from two
// servers are not comparable. Switch all clients together while no moving
// key is held (stop the writers, switch, restart), or accept that moving
// keys are unprotected until the old holders are gone. The consistent
// functions below only limit how many keys move.
type ShardFunc func(key string, numServers int) int

// CRC32Shard is the default ShardFunc: the IEEE CRC-32 of the key's bytes
// modulo the number of servers, the same as dflockd's Go client, the
// Python client (zlib.crc32) and the TypeScript client, so a mixed fleet
// agrees on every key. Adding or removing a server moves most keys. It
// returns 0 if numServers <= 0.
func CRC32Shard(key string, numServers int) int {
	if numServers <= 0 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(key)) % uint32(numServers))
}

// JumpShard is Lamping and Veach's jump consistent hash of the key's 64-bit
// FNV-1a hash. Growing the list from n to n+1 servers (appending at the
// end) moves only the keys that now belong to the new server, about 1/(n+1)
// of them; removing a server other than the last moves many. Clients in
// other languages agree if they implement the same two published
// algorithms. It returns 0 if numServers <= 0.
func JumpShard(key string, numServers int) int {
	if numServers <= 0 {
		return 0
	}
	h := fnvAdd(fnvOffset, key)
	b, j := int64(-1), int64(0)
	for j < int64(numServers) {
		b = j
		h = h*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((h>>33)+1)))
	}
	return int(b)
}

// RendezvousShard returns a ShardFunc that picks, among servers, the one
// with the highest score for the key (rendezvous or highest-random-weight
// hashing). The score is the splitmix64 finaliser of the 64-bit FNV-1a hash
// of the server's address, a zero byte, and the key; ties go to the lower
// index. Because a key's owner depends only on the addresses, adding or
// removing any server — not only the last — moves just the keys that
// server gains or had, and the order of the list does not matter.
//
// Use the same slice as the Lock's or Semaphore's Servers. Called with a
// number of servers other than len(servers), the function returns -1,
// which Lock and Semaphore report as ErrInvalid.
func RendezvousShard(servers []string) ShardFunc {
	seeds := make([]uint64, len(servers))
	for i, s := range servers {
		seeds[i] = fnvByte(fnvAdd(fnvOffset, s), 0)
	}
	return func(key string, numServers int) int {
		if numServers != len(seeds) {
			return -1
		}
		best, bestScore := -1, uint64(0)
		for i, seed := range seeds {
			if s := mix64(fnvAdd(seed, key)); best < 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		return best
	}
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = fnvByte(h, s[i])
	}
	return h
}

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

// mix64 is the splitmix64 finaliser: a bijection that spreads FNV's weak
// high bits over the whole word.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
