package redistier

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kinds of publication, after the partition id.
const (
	kindRecord = 'r' // a new record follows
	kindError  = 'e' // the backend failed; its message follows
	kindNone   = 'n' // the lease was released without a record: look again
)

// notice is a publication for one partition, or, with kind kindNone and
// no body, a prompt to look again after the subscription was restored.
type notice struct {
	kind byte
	body []byte
}

// waiter waits for the next notice of one partition.
type waiter struct {
	id [sha256.Size]byte
	ch chan notice // buffered 1; only the first notice matters
}

// subscriber receives the tier's publications on one Redis channel and
// hands them to the waiters of their partitions. It subscribes on first
// use and stays subscribed until Close; go-redis reconnects and
// resubscribes after an outage, and every waiter is then told to look
// again, since publications may have been lost meanwhile.
type subscriber struct {
	rdb     redis.UniversalClient
	channel string
	lost    func(error) // called when the connection breaks

	start sync.Once
	ready chan struct{} // closed once the first subscription is confirmed
	done  chan struct{} // closed when the receiving goroutine ends

	mu      sync.Mutex
	waiters map[[sha256.Size]byte]map[*waiter]struct{}
	ps      *redis.PubSub
	closed  bool
}

func newSubscriber(rdb redis.UniversalClient, channel string, lost func(error)) *subscriber {
	return &subscriber{
		rdb: rdb, channel: channel, lost: lost,
		ready: make(chan struct{}), done: make(chan struct{}),
		waiters: map[[sha256.Size]byte]map[*waiter]struct{}{},
	}
}

var errClosed = errors.New("redistier: tier closed")

// add registers a waiter for the partition id and waits, up to timeout,
// for the subscription to be confirmed. A notice published after add
// returns reaches the waiter (unless the connection is lost, which the
// waiter's own re-checks cover).
func (s *subscriber) add(ctx context.Context, id [sha256.Size]byte, timeout time.Duration) (*waiter, error) {
	w := &waiter{id: id, ch: make(chan notice, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &redisError{errClosed}
	}
	set := s.waiters[id]
	if set == nil {
		set = map[*waiter]struct{}{}
		s.waiters[id] = set
	}
	set[w] = struct{}{}
	s.mu.Unlock()
	s.start.Do(s.run)

	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return w, nil
	case <-t.C:
		err := errors.New("subscription not confirmed in time")
		s.remove(w)
		return nil, &redisError{err}
	case <-ctx.Done():
		s.remove(w)
		return nil, ctx.Err()
	}
}

// remove unregisters a waiter.
func (s *subscriber) remove(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set := s.waiters[w.id]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(s.waiters, w.id)
		}
	}
}

// run subscribes and starts the goroutine that dispatches publications.
func (s *subscriber) run() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(s.done)
		return
	}
	// Subscribing without channels does not connect: the receiving
	// goroutine connects, and reconnects, with the channel remembered.
	s.ps = s.rdb.Subscribe(context.Background())
	go s.receive(s.ps)
}

// Timings of the receiving goroutine.
const (
	receiveTimeout = 2 * time.Second        // idle time before a PING checks the connection
	errorPause     = 100 * time.Millisecond // pause after a connection error
)

// receive subscribes and dispatches what arrives until ps is closed. A
// broken connection is reported to every waiter at once, so that each
// looks at Redis again (and falls back to the backend if it is down)
// instead of waiting for a publication that cannot come.
func (s *subscriber) receive(ps *redis.PubSub) {
	defer close(s.done)
	ctx := context.Background()
	sub, cancel := context.WithTimeout(ctx, 5*time.Second)
	// The channel is remembered even if this fails, and subscribed to
	// again on every reconnect.
	_ = ps.Subscribe(sub, s.channel)
	cancel()
	confirmed := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, receiveTimeout)
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				_ = ps.Ping(ctx) // its answer, or its error, comes to ReceiveTimeout
				continue
			}
			s.lost(err)
			s.broadcast()
			time.Sleep(errorPause)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" || m.Channel != s.channel {
				continue
			}
			if !confirmed {
				confirmed = true
				close(s.ready)
				continue
			}
			s.broadcast() // resubscribed after a reconnect
		case *redis.Message:
			s.dispatch(m.Payload)
		}
	}
}

// dispatch hands a publication to the waiters of its partition.
func (s *subscriber) dispatch(payload string) {
	if len(payload) < publishIDLen {
		return
	}
	var id [sha256.Size]byte
	copy(id[:], payload)
	n := notice{kind: payload[sha256.Size], body: []byte(payload[publishIDLen:])}
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.waiters[id] {
		select {
		case w.ch <- n:
		default:
		}
	}
}

// broadcast tells every waiter to look again.
func (s *subscriber) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range s.waiters {
		for w := range set {
			select {
			case w.ch <- notice{kind: kindNone}:
			default:
			}
		}
	}
}

// close unsubscribes and waits for the receiving goroutine to end.
func (s *subscriber) close() {
	s.mu.Lock()
	s.closed = true
	ps := s.ps
	s.mu.Unlock()
	s.start.Do(func() { close(s.done) })
	if ps != nil {
		_ = ps.Close()
	}
	<-s.done
}
