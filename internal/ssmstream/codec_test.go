package ssmstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
)

func sample() *Message {
	m := &Message{
		Type: TypeOutput, SchemaVersion: 1, CreatedDate: 1764115200123, SequenceNumber: 42, Flags: 3,
		PayloadType: PayloadOutput, Payload: []byte("hello-from-task\r\n"),
	}
	copy(m.MessageID[:], []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0x4c, 0xde, 0x8f, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd})
	return m
}

func TestRoundTrip(t *testing.T) {
	for _, p := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0, 0xff}, 5000)} {
		m := sample()
		m.Payload = p
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != MinLength+len(p) {
			t.Fatalf("length %d, want %d", len(b), MinLength+len(p))
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != m.Type || got.SchemaVersion != 1 || got.CreatedDate != m.CreatedDate || got.SequenceNumber != 42 ||
			got.Flags != 3 || got.MessageID != m.MessageID || got.PayloadType != PayloadOutput || !bytes.Equal(got.Payload, p) ||
			got.PayloadDigest != sha256.Sum256(p) {
			t.Fatalf("round trip: got %+v, want %+v", got, m)
		}
	}
}

// TestLayout pins the byte layout the session-manager-plugin reads and
// writes (its message/clientmessage.go offsets).
func TestLayout(t *testing.T) {
	m := sample()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	if be.Uint32(b) != 116 {
		t.Errorf("HeaderLength %d", be.Uint32(b))
	}
	if want := "output_stream_data              "; string(b[4:36]) != want {
		t.Errorf("MessageType %q, want space padded %q", b[4:36], want)
	}
	if be.Uint32(b[36:]) != 1 || be.Uint64(b[40:]) != 1764115200123 || be.Uint64(b[48:]) != 42 || be.Uint64(b[56:]) != 3 {
		t.Errorf("schema/date/seq/flags: % x", b[36:64])
	}
	// Least significant half of the UUID first.
	if got := hex.EncodeToString(b[64:80]); got != "8f0123456789abcd0123456789ab4cde" {
		t.Errorf("MessageId on the wire %s", got)
	}
	if d := sha256.Sum256(m.Payload); !bytes.Equal(b[80:112], d[:]) {
		t.Error("PayloadDigest is not the payload's SHA-256")
	}
	if be.Uint32(b[112:]) != 1 || be.Uint32(b[116:]) != uint32(len(m.Payload)) || !bytes.Equal(b[120:], m.Payload) {
		t.Errorf("payload type/length/payload: % x", b[112:])
	}
	if UUIDString(m.MessageID) != "01234567-89ab-4cde-8f01-23456789abcd" {
		t.Errorf("UUIDString %s", UUIDString(m.MessageID))
	}
}

func TestDigestChecked(t *testing.T) {
	b, _ := Encode(sample())
	b[len(b)-1] ^= 1
	if _, err := Decode(b); !errors.Is(err, ErrDigest) {
		t.Fatalf("tampered payload: %v, want ErrDigest", err)
	}
	b[len(b)-1] ^= 1
	b[90] ^= 1
	if _, err := Decode(b); !errors.Is(err, ErrDigest) {
		t.Fatalf("tampered digest: %v, want ErrDigest", err)
	}
}

func TestBadFrames(t *testing.T) {
	good, _ := Encode(sample())
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	be := binary.BigEndian
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":             {nil, ErrShort},
		"short":             {good[:MinLength-1], ErrShort},
		"truncated payload": {good[:len(good)-1], ErrLength},
		"extra byte":        {append(append([]byte(nil), good...), 0), ErrLength},
		"header too short":  {mod(func(b []byte) []byte { be.PutUint32(b, 12); return b }), ErrHeader},
		"header too long":   {mod(func(b []byte) []byte { be.PutUint32(b, 0xffffffff); return b }), ErrHeader},
		"huge length":       {mod(func(b []byte) []byte { be.PutUint32(b[116:], 0xfffffff0); return b }), ErrLength},
		"blank type": {mod(func(b []byte) []byte {
			copy(b[4:36], bytes.Repeat([]byte{' '}, 32))
			return b
		}), ErrMessageType},
		"binary type": {mod(func(b []byte) []byte { b[5] = 0x01; return b }), ErrMessageType},
	} {
		if _, err := Decode(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := Encode(&Message{Type: "a_type_name_longer_than_32_bytes_x"}); !errors.Is(err, ErrMessageType) {
		t.Errorf("long type: %v", err)
	}
	if _, err := Encode(&Message{}); !errors.Is(err, ErrMessageType) {
		t.Errorf("no type: %v", err)
	}
}

// FuzzDecode: any bytes decode to a message or an error, never a panic,
// and what decodes re-encodes to the same message.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample())
	f.Add(good)
	empty := sample()
	empty.Payload = nil
	b, _ := Encode(empty)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if m != nil {
				t.Fatal("message with an error")
			}
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if m2.Type != m.Type || m2.SequenceNumber != m.SequenceNumber || m2.MessageID != m.MessageID ||
			m2.PayloadType != m.PayloadType || !bytes.Equal(m2.Payload, m.Payload) {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, m2)
		}
	})
}
