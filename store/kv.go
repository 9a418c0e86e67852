package store

import (
	"context"

	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// kv is what the Store needs of its database: badger (badgerKV) or a
// Config.Datastore (dsKV).
type kv interface {
	Get(ctx context.Context, k datastore.Key) ([]byte, error)
	Put(ctx context.Context, k datastore.Key, v []byte) error
	Delete(ctx context.Context, k datastore.Key) error
	// Iterate calls fn for every entry whose key starts with prefix, with
	// a nil value when keysOnly, or the error reading the value. An error
	// from fn stops it.
	Iterate(ctx context.Context, prefix string, keysOnly bool, fn func(k string, v []byte, err error) error) error
}

// dsKV is a Config.Datastore as a kv.
type dsKV struct{ datastore.Batching }

func (d dsKV) Iterate(ctx context.Context, prefix string, keysOnly bool, fn func(string, []byte, error) error) error {
	res, err := d.Query(ctx, query.Query{Prefix: prefix, KeysOnly: keysOnly})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		if err := fn(r.Key, r.Value, nil); err != nil {
			return err
		}
	}
	return nil
}
