package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// The decoding below reads a manifest one field and one asset at a time,
// checking each as it comes, rather than decoding the whole document into
// wire structs first: an asset list of 22 million empty objects (64 MiB)
// made encoding/json allocate 6.75 GB before the first was refused. It is
// also exact where encoding/json is lenient: a field name must be written
// as documented ("Path" is not "path") and may appear once per object (a
// browser's JSON.parse keeps the last of two; Go's decoder mixed them).

// decodeObject reads a JSON object from dec whose field names are among
// names, calling field with a name's index to decode its value: a name not
// among them, or one given twice, is an error, as is a value that is not
// an object. names holds at most 64.
func decodeObject(dec *json.Decoder, names []string, field func(i int) error) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('{') {
		return fmt.Errorf("%v where an object belongs", t)
	}
	var seen uint64
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := t.(string)
		i := slices.Index(names, name)
		switch {
		case i < 0:
			return fmt.Errorf("unknown field %q", name)
		case seen&(1<<i) != 0:
			return fmt.Errorf("field %q given twice", name)
		}
		seen |= 1 << i
		if err := field(i); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	_, err = dec.Token() // the closing brace: dec.More said there is no more
	return err
}

// decodeArray reads a JSON array (or null, as an empty one) from dec,
// calling each for every element; it stops at the first error.
func decodeArray(dec *json.Decoder, each func(i int) error) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		return nil
	}
	if t != json.Delim('[') {
		return fmt.Errorf("%v where an array belongs", t)
	}
	for i := 0; dec.More(); i++ {
		if err := each(i); err != nil {
			return err
		}
	}
	_, err = dec.Token()
	return err
}

// minNodeLen is the shortest base64 text of an inner node: a dag-pb node
// of this profile links to at least one block, whose hash alone is 32
// bytes (44 characters of base64).
const minNodeLen = 44

// assetFields are the names of an asset's fields, as decodeAsset numbers
// them.
var assetFields = []string{"path", "cid", "size", "type", "nodes"}

// decodeAsset reads one asset's wire form from dec.
func decodeAsset(dec *json.Decoder) (wireAsset, error) {
	var wa wireAsset
	err := decodeObject(dec, assetFields, func(i int) error {
		switch i {
		case 0:
			return dec.Decode(&wa.Path)
		case 1:
			return dec.Decode(&wa.Cid)
		case 2:
			return dec.Decode(&wa.Size)
		case 3:
			return dec.Decode(&wa.Type)
		}
		return decodeArray(dec, func(j int) error {
			var s string
			if err := dec.Decode(&s); err != nil {
				return err
			}
			if len(s) < minNodeLen {
				return fmt.Errorf("node %d: %d characters, shorter than any inner node", j, len(s))
			}
			wa.Nodes = append(wa.Nodes, s)
			return nil
		})
	})
	return wa, err
}

// decodeSeeds reads the seeds field, refusing more than MaxSeeds entries
// as they come.
func decodeSeeds(dec *json.Decoder, seeds *[]string) error {
	return decodeArray(dec, func(i int) error {
		if i >= MaxSeeds {
			return fmt.Errorf("more than %d entries", MaxSeeds)
		}
		var s string
		if err := dec.Decode(&s); err != nil {
			return err
		}
		*seeds = append(*seeds, s)
		return nil
	})
}

// errAsset wraps the error of asset i, whose path is path if known.
func errAsset(i int, path string, err error) error {
	return fmt.Errorf("asset %d (%q): %w", i, path, err)
}

var errTrailing = errors.New("data after the manifest object")
