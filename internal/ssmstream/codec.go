// Package ssmstream speaks the SSM Session Manager data channel, the
// protocol of AWS's session-manager-plugin, so that `aws ecs
// execute-command` works against Gantry unchanged. It bridges a plugin's
// session onto Gantry's own exec stream (package execstream): the plugin's
// keystrokes and terminal sizes become the command's stdin and resizes, the
// command's terminal output becomes the plugin's output.
//
// This file is the codec: every binary websocket message of the data
// channel is one AgentMessage, a fixed header followed by its payload,
// all integers big-endian:
//
//	offset size field
//	0      4    HeaderLength (116: the offset of PayloadLength)
//	4      32   MessageType, ASCII padded with spaces
//	36     4    SchemaVersion
//	40     8    CreatedDate, milliseconds since the epoch
//	48     8    SequenceNumber
//	56     8    Flags
//	64     16   MessageId, a UUID with its two 8-byte halves swapped
//	80     32   PayloadDigest, SHA-256 of the payload
//	112    4    PayloadType
//	116    4    PayloadLength
//	120    -    Payload
package ssmstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Message types.
const (
	TypeInput            = "input_stream_data"
	TypeOutput           = "output_stream_data"
	TypeAcknowledge      = "acknowledge"
	TypeChannelClosed    = "channel_closed"
	TypeStartPublication = "start_publication"
	TypePausePublication = "pause_publication"
)

// PayloadType says what a stream message's payload is.
type PayloadType uint32

const (
	PayloadOutput               PayloadType = 1
	PayloadError                PayloadType = 2
	PayloadSize                 PayloadType = 3
	PayloadParameter            PayloadType = 4
	PayloadHandshakeRequest     PayloadType = 5
	PayloadHandshakeResponse    PayloadType = 6
	PayloadHandshakeComplete    PayloadType = 7
	PayloadEncChallengeRequest  PayloadType = 8
	PayloadEncChallengeResponse PayloadType = 9
	PayloadFlag                 PayloadType = 10
	PayloadStdErr               PayloadType = 11
	PayloadExitCode             PayloadType = 12
)

// Field offsets and sizes of the header.
const (
	offMessageType    = 4
	lenMessageType    = 32
	offSchemaVersion  = 36
	offCreatedDate    = 40
	offSequenceNumber = 48
	offFlags          = 56
	offMessageID      = 64
	offPayloadDigest  = 80
	offPayloadType    = 112
	offPayloadLength  = 116
	// HeaderLength is the header's length as the HeaderLength field counts
	// it: everything before PayloadLength.
	HeaderLength = offPayloadLength
	// MinLength is the length of a message with an empty payload.
	MinLength = HeaderLength + 4
	// MaxPayload bounds what a peer may send in one message; the plugin
	// sends at most a few KiB per keystroke batch.
	MaxPayload = 1 << 20
)

// Message is one AgentMessage.
type Message struct {
	Type           string
	SchemaVersion  uint32
	CreatedDate    uint64 // ms since the epoch
	SequenceNumber int64
	Flags          uint64
	MessageID      [16]byte // in the usual (RFC 4122) byte order
	PayloadDigest  [32]byte // set by Encode; checked by Decode
	PayloadType    PayloadType
	Payload        []byte
}

// Errors Decode returns; a peer's malformed frame is never a panic.
var (
	ErrShort       = errors.New("ssmstream: message shorter than its header")
	ErrHeader      = errors.New("ssmstream: bad header length")
	ErrLength      = errors.New("ssmstream: payload length does not match the message")
	ErrDigest      = errors.New("ssmstream: payload digest does not match the payload")
	ErrMessageType = errors.New("ssmstream: bad message type")
)

// Encode serializes m, computing its payload digest (the digest field of m
// is ignored, so a caller cannot send a stale one).
func Encode(m *Message) ([]byte, error) {
	if len(m.Type) == 0 || len(m.Type) > lenMessageType || !printable(m.Type) {
		return nil, fmt.Errorf("%w: %q", ErrMessageType, m.Type)
	}
	if len(m.Payload) > MaxPayload {
		return nil, fmt.Errorf("ssmstream: payload of %d bytes is over %d", len(m.Payload), MaxPayload)
	}
	b := make([]byte, MinLength+len(m.Payload))
	be := binary.BigEndian
	be.PutUint32(b, HeaderLength)
	// The plugin pads the type with spaces and trims both spaces and NULs.
	copy(b[offMessageType:offMessageType+lenMessageType], strings.Repeat(" ", lenMessageType))
	copy(b[offMessageType:], m.Type)
	be.PutUint32(b[offSchemaVersion:], m.SchemaVersion)
	be.PutUint64(b[offCreatedDate:], m.CreatedDate)
	be.PutUint64(b[offSequenceNumber:], uint64(m.SequenceNumber))
	be.PutUint64(b[offFlags:], m.Flags)
	// The UUID goes on the wire as its least significant half first, the
	// way the SSM agent (Java-style getLeast/MostSignificantBits) writes it.
	copy(b[offMessageID:], m.MessageID[8:])
	copy(b[offMessageID+8:], m.MessageID[:8])
	m.PayloadDigest = sha256.Sum256(m.Payload)
	copy(b[offPayloadDigest:], m.PayloadDigest[:])
	be.PutUint32(b[offPayloadType:], uint32(m.PayloadType))
	be.PutUint32(b[offPayloadLength:], uint32(len(m.Payload)))
	copy(b[MinLength:], m.Payload)
	return b, nil
}

// Decode parses one message and checks it: its lengths agree with the
// frame's, its type is text, and a non-empty payload matches its digest.
// The payload is a copy, so b may be reused.
func Decode(b []byte) (*Message, error) {
	if len(b) < MinLength {
		return nil, ErrShort
	}
	be := binary.BigEndian
	hl := be.Uint32(b)
	// A longer header would be a newer schema with fields we do not know;
	// the plugin reads fixed offsets, so the payload starts at hl+4.
	if hl < HeaderLength || uint64(hl)+4 > uint64(len(b)) {
		return nil, ErrHeader
	}
	pl := be.Uint32(b[offPayloadLength:])
	if uint64(hl)+4+uint64(pl) != uint64(len(b)) || pl > MaxPayload {
		return nil, ErrLength
	}
	typ := strings.TrimSpace(string(bytes.Trim(b[offMessageType:offMessageType+lenMessageType], "\x00")))
	if typ == "" || !printable(typ) {
		return nil, ErrMessageType
	}
	m := &Message{
		Type:           typ,
		SchemaVersion:  be.Uint32(b[offSchemaVersion:]),
		CreatedDate:    be.Uint64(b[offCreatedDate:]),
		SequenceNumber: int64(be.Uint64(b[offSequenceNumber:])),
		Flags:          be.Uint64(b[offFlags:]),
		PayloadType:    PayloadType(be.Uint32(b[offPayloadType:])),
		Payload:        append([]byte(nil), b[hl+4:]...),
	}
	copy(m.MessageID[8:], b[offMessageID:offMessageID+8])
	copy(m.MessageID[:8], b[offMessageID+8:offMessageID+16])
	copy(m.PayloadDigest[:], b[offPayloadDigest:offPayloadDigest+32])
	// As the plugin does: an empty payload's digest is not checked (peers
	// leave it zero on some control messages).
	if pl != 0 && sha256.Sum256(m.Payload) != m.PayloadDigest {
		return nil, ErrDigest
	}
	return m, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// UUIDString formats a message id as the plugin does (lower case, hyphens).
func UUIDString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
