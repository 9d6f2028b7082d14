package redistier

import (
	"encoding/json"
	"fmt"
)

// A Codec turns the values of one cache type into bytes for Redis and
// back. Decode must return values of the same dynamic type as the Type's
// Fetch returns, since the cache hands them to callers as if the backend
// had returned them.
type Codec interface {
	Encode(v any) ([]byte, error)
	Decode(data []byte) (any, error)
}

// JSON returns a Codec that stores values of type T as JSON with
// encoding/json. Encode rejects values of any other type; Decode returns
// a T (not a *T).
func JSON[T any]() Codec { return jsonCodec[T]{} }

type jsonCodec[T any] struct{}

// Encode implements Codec.
func (jsonCodec[T]) Encode(v any) ([]byte, error) {
	t, ok := v.(T)
	if !ok {
		var zero T
		return nil, fmt.Errorf("redistier: JSON codec for %T got a %T", zero, v)
	}
	return json.Marshal(t)
}

// Decode implements Codec.
func (jsonCodec[T]) Decode(data []byte) (any, error) {
	var t T
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, err
	}
	return t, nil
}
