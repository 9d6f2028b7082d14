package redistier

import "github.com/redis/go-redis/v9"

// The Lua scripts run atomically in Redis. go-redis sends them by SHA and
// falls back to the source when Redis does not know them (after a
// restart, say).
var (
	// acquireScript takes the lease KEYS[1] for owner ARGV[1] for ARGV[2]
	// ms if nobody holds it and the record KEYS[2] still starts with
	// ARGV[3] (its header as the caller read it, or '' for none). It
	// returns {-1, ''} if it took the lease, {-2, ''} if the record
	// changed, otherwise the lease's remaining time in ms and its owner.
	acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if (cur and string.sub(cur, 1, 32) or '') ~= ARGV[3] then return {-2, ''} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1, ''} end
return {redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}`)

	// renewScript extends the lease KEYS[1] to ARGV[2] ms if owner ARGV[1]
	// still holds it, and returns 1 if it did.
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

	// commitScript ends owner ARGV[1]'s lease KEYS[1]: if the owner still
	// holds it, it stores the record ARGV[2] (unless empty) under KEYS[2]
	// for ARGV[3] ms, deletes the lease and publishes ARGV[5] followed by
	// the record on channel ARGV[4]. It returns 1 if the owner held the
	// lease, 0 if not (and then does nothing).
	commitScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[2])
return 1`)

	// putScript stores the record ARGV[1] under KEYS[1] for ARGV[2] ms
	// unless a record with an index as high is there; a record that is
	// not one (wrong magic) or equals ARGV[3], the bytes the caller
	// found undecodable, is replaced too. It returns 1 if it stored.
	putScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] and string.sub(cur, 1, 4) == 'art1' and string.sub(cur, 5, 24) >= string.sub(ARGV[1], 5, 24) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)
)
