package redistier

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/agentcache/cache"
)

// partition is one entry of the fleet: the tier's Name and a request's
// datacenter, token and key, as Redis knows it.
type partition struct {
	id     [sha256.Size]byte // names the Redis keys and routes publications
	fp     [sha256.Size]byte // fingerprint stored in the record
	token  string            // to redact errors before they are published; never sent
	record string            // Redis key of the record
	lease  string            // Redis key of the lease
}

// Domain labels keep the two HMACs of a partition independent.
const (
	labelID          = "agentcache/redistier/id/v1"
	labelFingerprint = "agentcache/redistier/fingerprint/v1"
)

// maxPartitions bounds the partitions a tier remembers: past it, the
// memory is emptied and refilled by the requests that follow.
const maxPartitions = 4096

// partitionKey identifies a partition within a tier.
type partitionKey struct{ datacenter, token, key string }

// partitions remembers the partitions of recent requests, so that a
// shared hit does not compute two HMACs. Partitions never change once
// made; the memory stays in the process, like the requests themselves.
type partitions struct {
	mu sync.RWMutex
	m  map[partitionKey]*partition
}

// partition returns the partition of a request.
func (t *Tier) partition(info cache.RequestInfo) *partition {
	k := partitionKey{info.Datacenter, info.Token, info.Key}
	ps := &t.parts
	ps.mu.RLock()
	p, ok := ps.m[k]
	ps.mu.RUnlock()
	if ok {
		return p
	}
	p = t.newPartition(info)
	ps.mu.Lock()
	if len(ps.m) >= maxPartitions || ps.m == nil {
		ps.m = make(map[partitionKey]*partition)
	}
	ps.m[k] = p
	ps.mu.Unlock()
	return p
}

// newPartition computes the partition of a request.
func (t *Tier) newPartition(info cache.RequestInfo) *partition {
	p := &partition{token: info.Token}
	fields := []string{t.o.Name, info.Datacenter, info.Token, info.Key}
	p.id = t.mac(labelID, fields)
	p.fp = t.mac(labelFingerprint, fields)
	// The hash tag puts a partition's record and lease in one Redis
	// Cluster slot, so that the scripts may touch both.
	base := t.keyBase + "{" + hex.EncodeToString(p.id[:]) + "}"
	p.record, p.lease = base+":r", base+":l"
	return p
}

// mac returns the HMAC-SHA256, keyed with the tier's Secret, of label and
// fields, each preceded by its length so that no two lists of fields
// frame to the same bytes.
func (t *Tier) mac(label string, fields []string) [sha256.Size]byte {
	h := hmac.New(sha256.New, t.o.Secret)
	var n [binary.MaxVarintLen64]byte
	for _, f := range append([]string{label}, fields...) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		h.Write([]byte(f))
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Record layout: magic, the index as 20 decimal digits (so that the Lua
// scripts can compare indexes as strings), the fetch time in Unix
// nanoseconds (8 bytes, big-endian), the partition's fingerprint, and the
// encoded value.
const (
	recordMagic  = "art1"
	indexDigits  = 20
	headerLen    = len(recordMagic) + indexDigits + 8 + sha256.Size
	publishIDLen = sha256.Size + 1 // a publication's partition id and kind

	// recordHeaderCheck is how much of a record tells one write from
	// another: magic, index and fetch time.
	recordHeaderCheck = len(recordMagic) + indexDigits + 8
)

// record is a shared record, decoded.
type record struct {
	index     uint64
	fetchedAt time.Time
	value     []byte // encoded
}

var (
	errCorrupt = errors.New("redistier: corrupt record")
	errForeign = errors.New("redistier: record of another partition")
)

// encodeRecord returns the bytes of a record of p.
func encodeRecord(p *partition, index uint64, fetchedAt time.Time, value []byte) []byte {
	b := make([]byte, 0, headerLen+len(value))
	b = append(b, recordMagic...)
	digits := strconv.FormatUint(index, 10)
	for range indexDigits - len(digits) {
		b = append(b, '0')
	}
	b = append(b, digits...)
	b = binary.BigEndian.AppendUint64(b, uint64(fetchedAt.UnixNano()))
	b = append(b, p.fp[:]...)
	return append(b, value...)
}

// decodeRecord decodes the bytes of a record and checks that p wrote it.
// The value stays encoded.
func decodeRecord(p *partition, b []byte) (record, error) {
	if len(b) < headerLen || string(b[:len(recordMagic)]) != recordMagic {
		return record{}, errCorrupt
	}
	b = b[len(recordMagic):]
	index, err := strconv.ParseUint(string(b[:indexDigits]), 10, 64)
	if err != nil {
		return record{}, fmt.Errorf("%w: index: %v", errCorrupt, err)
	}
	b = b[indexDigits:]
	at := time.Unix(0, int64(binary.BigEndian.Uint64(b)))
	b = b[8:]
	if subtle.ConstantTimeCompare(b[:sha256.Size], p.fp[:]) != 1 {
		return record{}, errForeign
	}
	return record{index: index, fetchedAt: at, value: b[sha256.Size:]}, nil
}
