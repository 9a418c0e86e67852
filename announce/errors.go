package announce

import "errors"

var (
	// ErrClosed is returned (wrapped) by calls on an Announcer or Table after
	// Close.
	ErrClosed = errors.New("announce: closed")

	// ErrBadName is returned (wrapped) when a mesh name does not follow the
	// rule in ValidName.
	ErrBadName = errors.New("announce: bad mesh name")

	// ErrBadConfig is returned (wrapped) by New for a Config it cannot use.
	ErrBadConfig = errors.New("announce: bad config")

	// ErrMalformed is returned (wrapped) by Decode for bytes that are not a
	// message of a version it knows.
	ErrMalformed = errors.New("announce: malformed message")

	// ErrUnknownVersion is returned (wrapped) by Decode for a message whose
	// version byte is not Version. Newer peers may send such messages; they
	// are ignored, not held against the sender.
	ErrUnknownVersion = errors.New("announce: unknown message version")

	// ErrTooLarge is returned (wrapped) by Decode for more than
	// MaxMessageSize bytes.
	ErrTooLarge = errors.New("announce: message too large")
)
