package codec

import (
	"strings"
	"testing"
)

// TestDecodeChunked feeds every sample request, split at every point into
// two chunks and byte by byte, through a streaming decoder and checks that it
// decodes the same as the request given whole.
func TestDecodeChunked(t *testing.T) {
	t.Parallel()

	inputs := append(append([]string(nil), sampleRequests...), sampleErrors...)
	for _, in := range inputs {
		buf := []byte(in)
		want, wantRest, bad := decodeAll(buf)
		if bad != "" {
			t.Fatalf("%q: %s", in, bad)
		}
		if len(want) != 1 || wantRest != 0 {
			t.Fatalf("%q: whole decode = %v, rest %d; want one request", in, want, wantRest)
		}
		for split := 0; split <= len(buf); split++ {
			got, rest, bad := decodeChunks(buf[:split], buf[split:])
			if bad != "" {
				t.Fatalf("%q split at %d: %s", in, split, bad)
			}
			if d := diffSteps(got, want); d != "" || rest != 0 {
				t.Fatalf("%q split at %d: %s (rest %d)", in, split, d, rest)
			}
		}
		got, rest, bad := decodeChunks(bytewise(buf)...)
		if bad != "" {
			t.Fatalf("%q byte by byte: %s", in, bad)
		}
		if d := diffSteps(got, want); d != "" || rest != 0 {
			t.Fatalf("%q byte by byte: %s (rest %d)", in, d, rest)
		}
	}
}

// TestDecodeChunkedStream does the same with a pipelined stream of many
// requests, good and malformed, with a trailing incomplete request, and with
// a trailing over-long line.
func TestDecodeChunkedStream(t *testing.T) {
	t.Parallel()

	var sb strings.Builder
	for i := 0; i < 3; i++ {
		for j, r := range sampleRequests {
			sb.WriteString(r)
			if j%4 == 0 {
				sb.WriteString(sampleErrors[(i*7+j)%len(sampleErrors)])
			}
		}
	}
	stream := sb.String()
	wantCount := 3*len(sampleRequests) + 3*((len(sampleRequests)+3)/4)

	tests := []struct {
		name     string
		give     string
		wantRest int
		tooLong  bool
	}{
		{"pipelined", stream, 0, false},
		{"trailing incomplete", stream + "sl\nk\n5 3", len("sl\nk\n5 3"), false},
		{"trailing over-long line", stream + "l\n" + strings.Repeat("k", MaxLineLen+1), -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			buf := []byte(tt.give)
			want, wantRest, bad := decodeAll(buf)
			if bad != "" {
				t.Fatal(bad)
			}
			count := len(want)
			if tt.tooLong {
				if want[count-1].Err != ErrLineTooLong {
					t.Fatalf("last step = %v, want ErrLineTooLong", want[count-1])
				}
				count--
			}
			if count != wantCount || wantRest != tt.wantRest {
				t.Fatalf("whole decode: %d requests, rest %d; want %d, %d", count, wantRest, wantCount, tt.wantRest)
			}
			var errs int
			for _, s := range want {
				if s.Err != nil {
					errs++
				}
			}
			if errs == 0 {
				t.Fatal("stream has no malformed request")
			}

			for split := 0; split <= len(buf); split++ {
				got, rest, bad := decodeChunks(buf[:split], buf[split:])
				if bad != "" {
					t.Fatalf("split at %d: %s", split, bad)
				}
				if d := diffSteps(got, want); d != "" {
					t.Fatalf("split at %d: %s", split, d)
				}
				if rest != wantRest {
					t.Fatalf("split at %d: rest %d, want %d", split, rest, wantRest)
				}
			}
			got, rest, bad := decodeChunks(bytewise(buf)...)
			if bad != "" {
				t.Fatalf("byte by byte: %s", bad)
			}
			if d := diffSteps(got, want); d != "" || rest != wantRest {
				t.Fatalf("byte by byte: %s (rest %d, want %d)", d, rest, wantRest)
			}
		})
	}
}
