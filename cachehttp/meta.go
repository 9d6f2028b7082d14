package cachehttp

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/agentcache/cache"
)

// WriteMetaHeaders sets the response headers that tell how a value was
// served, replacing any already set:
//
//   - X-Cache: HIT if m.Hit, MISS otherwise;
//   - Age: m.Age in seconds, rounded to the nearest whole second as
//     Consul's agent does (a negative Age is written as 0);
//   - X-Cache-Index: m.Index in decimal.
//
// Headers set after WriteHeader (or the first Write) are not sent, so it
// must be called before those.
func WriteMetaHeaders(w http.ResponseWriter, m cache.ResultMeta) {
	h := w.Header()
	if m.Hit {
		h.Set("X-Cache", "HIT")
	} else {
		h.Set("X-Cache", "MISS")
	}
	h.Set("Age", fmt.Sprintf("%.0f", max(m.Age, 0).Seconds()))
	h.Set("X-Cache-Index", strconv.FormatUint(m.Index, 10))
}
