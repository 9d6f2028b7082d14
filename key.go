package cache

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// entryKey is an entry's partition: type, datacenter, ACL token and
// request key. Entries hold it encoded (see appendKey); this decoded form
// is for rehashing an entry's key, for logs, which leave the token out,
// and for redacting errors.
type entryKey struct {
	typ, dc, token, key string
}

// appendKey appends the encoding of a partition to b: the type, datacenter
// and token, each after its length as a uvarint, then the key. The encoding
// is injective, so partitions stay exact: no datacenter, token or key can
// contain something that makes two requests collide. The fields come
// apart rather than as an entryKey, here and in makeKey: the hit path
// then passes them in registers.
func appendKey(b []byte, typ, dc, token, key string) []byte {
	b = binary.AppendUvarint(b, uint64(len(typ)))
	b = append(b, typ...)
	b = binary.AppendUvarint(b, uint64(len(dc)))
	b = append(b, dc...)
	b = binary.AppendUvarint(b, uint64(len(token)))
	b = append(b, token...)
	return append(b, key...)
}

// decodeKey returns the partition that appendKey encoded as s. The fields
// share s's memory.
func decodeKey(s string) entryKey {
	var k entryKey
	k.typ, s = cutKeyField(s)
	k.dc, s = cutKeyField(s)
	k.token, s = cutKeyField(s)
	k.key = s
	return k
}

// cutKeyField splits a length-prefixed field off the front of s.
func cutKeyField(s string) (field, rest string) {
	var n uint64
	for i, shift := 0, uint(0); i < len(s); i, shift = i+1, shift+7 {
		c := s[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			s = s[i+1:]
			return s[:n], s[n:]
		}
	}
	panic("cache: corrupt entry key")
}

// keyRef is an encoded partition being looked up, with its hash. Its bytes
// are usually on the caller's stack: only an insertion copies them.
type keyRef struct {
	b    []byte
	hash uint64
}

// makeKey encodes a partition into buf (reused from its start; nil is
// fine) and hashes it. The hash reads the fields, not the bytes just
// written, which would stall on their stores.
func (c *Cache) makeKey(buf []byte, typ, dc, token, key string) keyRef {
	if buf == nil {
		buf = make([]byte, 0, len(typ)+len(dc)+len(token)+len(key)+3*binary.MaxVarintLen64)
	}
	return keyRef{appendKey(buf[:0], typ, dc, token, key), c.hashSeed.sum(typ, dc, token, key)}
}

// stackKeyMax bounds the summed lengths of a partition's fields that the
// hit path encodes on its stack: each field is then shorter than 128
// bytes, so its length is one byte, and the encoding fits a 128-byte
// buffer. Longer partitions are compared field by field (see keyIs).
const stackKeyMax = 128 - 3

// keyIs reports whether s, an encoded partition, is the one of the fields,
// without encoding them. decodeKey(s) == *k says the same, but costs the
// hits of long keys 12 % more (BenchmarkAdversarialKeys).
func keyIs(s string, k *entryKey) bool {
	var f string
	for _, want := range [...]string{k.typ, k.dc, k.token} {
		if f, s = cutKeyField(s); f != want {
			return false
		}
	}
	return s == k.key
}

// hashOf returns the hash of an entry's key.
func (c *Cache) hashOf(e *entry) uint64 {
	k := decodeKey(e.key)
	return c.hashSeed.sum(k.typ, k.dc, k.token, k.key)
}

// shard returns the index of the shard that holds the key's entry.
func (k keyRef) shard() uint8 {
	return uint8(k.hash >> (64 - shardBits))
}

// keyHash hashes partitions for one cache: the top bits of a hash pick the
// shard, the low bits the first slot to probe. It is wyhash's mixing step
// keyed with secrets of its own, drawn at random for each cache, as the Go
// runtime hashes map keys where the CPU lacks AES. The secrets keep which
// keys collide unknown outside the process. They were once wyhash's
// public constants, and XORing a key with one before multiplying let
// anyone craft keys whose product, and so hash, was 0 under every seed
// (see TestRegression_HashFlooding).
//
// hash/maphash would do as well, but reading the encoded key just written
// stalls on its stores, and hashing the four fields takes four calls:
// either costs a hit about a tenth of its time.
type keyHash struct {
	seed, k1, k2, k3 uint64
	// mask is ANDed into every hash: all ones, except in tests that make
	// every partition collide.
	mask uint64
}

// newKeyHash returns a keyHash with new random secrets.
func newKeyHash() keyHash {
	return keyHash{
		seed: rand.Uint64(),
		k1:   rand.Uint64(),
		k2:   rand.Uint64() | 1,
		k3:   rand.Uint64(),
		mask: ^uint64(0),
	}
}

// sum hashes a partition from its fields. The last multiplication mixes
// every bit into the shard and slot bits: without it, keys that differ in
// a few bytes only, such as counters after a common prefix, crowd some
// slots under some seeds, doubling the mean probe.
func (kh *keyHash) sum(typ, dc, token, key string) uint64 {
	h := kh.field(kh.seed, typ)
	h = kh.field(h, dc)
	h = kh.field(h, token)
	h = kh.field(h, key)
	return mix(h, kh.k3) & kh.mask
}

// field folds s, and its length, into h. k2 is odd, so lengths stay
// distinct once multiplied by it.
func (kh *keyHash) field(h uint64, s string) uint64 {
	n := uint64(len(s))
	if len(s) > 16 {
		h, s = kh.long(h, s)
	}
	var a, b uint64
	switch m := len(s); {
	case m >= 8:
		a, b = le64(s), le64(s[m-8:])
	case m >= 4:
		a, b = uint64(le32(s)), uint64(le32(s[m-4:]))
	case m > 0:
		a = uint64(s[0])<<16 | uint64(s[m>>1])<<8 | uint64(s[m-1])
	}
	return mix(a^kh.k1, b^h^n*kh.k2)
}

// long folds s into h, until at most 16 bytes are left, and returns
// those: 48 bytes at a time in three independent lanes, as wyhash does,
// each keyed with a secret of its own, then 16 at a time. The lanes
// multiply in parallel: a 204-byte key hashes in about 15 ns, against 21
// with one lane.
func (kh *keyHash) long(h uint64, s string) (uint64, string) {
	if len(s) > 48 {
		h1, h2 := h, h
		for len(s) > 48 {
			h = mix(le64(s)^kh.k1, le64(s[8:])^h)
			h1 = mix(le64(s[16:])^kh.k2, le64(s[24:])^h1)
			h2 = mix(le64(s[32:])^kh.k3, le64(s[40:])^h2)
			s = s[48:]
		}
		h ^= h1 ^ h2
	}
	for len(s) > 16 {
		h = mix(le64(s)^kh.k1, le64(s[8:])^h)
		s = s[16:]
	}
	return h, s
}

// mix folds the 128-bit product of a and b into 64 bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// le64 returns the first eight bytes of s, little-endian. The compiler
// turns it into a single load.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// le32 returns the first four bytes of s, little-endian.
func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
