package oip

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestFastFloatMatchesStrconv compares the decoder's fast float path with
// strconv on random decimal tokens and on the shortest forms of random
// float32 values (what clients send).
func TestFastFloatMatchesStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	check := func(tok string) {
		for _, bits := range []int{32, 64} {
			got, ok := fastFloat([]byte(tok), bits)
			if !ok {
				continue
			}
			want, err := strconv.ParseFloat(tok, bits)
			if err != nil {
				t.Fatalf("%s: strconv: %v", tok, err)
			}
			if math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("fastFloat(%q, %d) = %v, strconv %v", tok, bits, got, want)
			}
		}
	}
	for range 50000 {
		f := math.Float32frombits(r.Uint32())
		if f != f || math.IsInf(float64(f), 0) {
			continue
		}
		check(strconv.FormatFloat(float64(f), 'g', -1, 32))
		check(strconv.FormatFloat(float64(f), 'f', -1, 32))
		check(strconv.FormatFloat(float64(f), 'g', -1, 64))
	}
	for range 50000 {
		tok := ""
		if r.IntN(2) == 0 {
			tok = "-"
		}
		tok += strconv.FormatUint(r.Uint64N(1e16), 10)
		if r.IntN(2) == 0 {
			tok += "." + strconv.FormatUint(r.Uint64N(1e8), 10)
		}
		if r.IntN(2) == 0 {
			tok += "e" + strconv.Itoa(r.IntN(60)-30)
		}
		check(tok)
	}
	// Midpoint between two float32 neighbours must not take the fast path
	// wrongly: 1 + 2^-24 is exactly between 1 and the next float32.
	check("1.000000059604644775390625")
	check("16777217")
}
