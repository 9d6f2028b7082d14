// Package cachehttp serves values of a [cache.Cache] over HTTP with the
// usual HTTP caching conventions.
//
// A client's Cache-Control request header controls how fresh the value it
// gets must be: max-age and must-revalidate map to the MaxAge and
// MustRevalidate fields of [cache.RequestInfo], and stale-if-error lets the
// client accept an older value when a fetch fails. Responses tell how the
// value was served with the X-Cache, Age and X-Cache-Index headers.
//
// [ParseCacheControl] and [ApplyRequestInfo] parse the header,
// [WriteMetaHeaders] writes the response headers, and [Handler] puts them
// together into an http.Handler that answers with JSON.
//
// For operators, [EntriesHandler] shows the state of a cache's entries, as
// JSON or an HTML table, on an internal debug mux.
package cachehttp
