// Package redistier shares one cache across a fleet of processes through
// Redis, so that a change of a watched key costs the backend one blocking
// query however many instances embed the cache.
//
// Wrap decorates a cache.Type. The wrapped type keeps, per partition (the
// tier's Name and a request's datacenter, ACL token and key), one record
// in Redis: the value, through a Codec, with its index and the time it
// was fetched.
//
//   - A blocking fetch (MinIndex m > 0) returns the shared record at once
//     if its index is above m. Otherwise one instance in the fleet holds a
//     lease for the partition (SET NX PX with a random owner, renewed
//     while its fetch runs, deleted only by its owner) and runs the
//     backend's blocking query; it writes the new record and publishes it,
//     and every other instance waits for that publication, up to its
//     Timeout, and returns the same record. If the holder dies, its lease
//     expires after Options.LeaseTTL and another instance takes over.
//   - A non-blocking fetch (MinIndex 0, or a type that does not block)
//     serves a record younger than Options.MaxStale, or one that a
//     blocking query in flight somewhere in the fleet vouches for;
//     otherwise it takes the same lease: one instance fetches, the others
//     wait for its record.
//   - A backend error is published to the instances waiting for it, which
//     return it instead of retrying all at once; the cache's back-off then
//     applies as usual.
//   - Every Redis call is bounded by Options.RedisTimeout. When Redis
//     fails or is slow, the fetch calls the backend directly; the tier
//     counts it, logs once per outage, and while Redis stays down probes
//     it once a second, sharing again as soon as it answers. A Redis
//     problem never fails a fetch that the backend could answer.
//
// ACL tokens never reach Redis: keys carry an HMAC-SHA256 of the
// length-framed partition, and each record carries a second, independent
// HMAC of it (its fingerprint), checked before the record is served, so
// that a record is served only to the partition that wrote it, even if
// two partitions' keys collided. The Name is part of both, so values of
// different tiers never mix.
//
// A result served from Redis carries the entry's own State
// (FetchOptions.LastResult.State) unchanged: State is per process and is
// never shared.
package redistier
