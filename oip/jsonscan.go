package oip

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// scanner is a small hand-written JSON reader over a byte slice, enough for
// the OIP v2 REST bodies. It allocates only for the strings and tensors it
// returns.
type scanner struct {
	b []byte
	i int
	// lenient accepts the non-JSON tokens NaN, Infinity and -Infinity for
	// floating-point tensor data (used when reading responses, as some
	// Python servers write them).
	lenient bool
	// kbuf holds the current object key; a nested object reuses it, so a
	// key is valid only until its value is read.
	kbuf []byte
}

// maxNesting bounds the nesting of any JSON value, so hostile input cannot
// exhaust the stack.
const maxNesting = 64

func (s *scanner) syntax(what string) *Error {
	if s.i >= len(s.b) {
		return Errorf(InvalidArgument, "malformed JSON: unexpected end of input, %s", what)
	}
	return Errorf(InvalidArgument, "malformed JSON at offset %d: %s, found %q", s.i, what, s.b[s.i])
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte (0 at end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	return s.peek() == 'n' && s.literal("null")
}

// object reads an object, calling f for each key with the scanner placed at
// the value; f must consume the value. path names the object in errors.
func (s *scanner) object(path string, f func(key []byte) error) error {
	if s.peek() == 0 {
		return s.syntax("expected an object")
	}
	if s.peek() != '{' {
		return Errorf(InvalidArgument, "%s: must be an object", path)
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.syntax("expected an object key")
		}
		key, plain := s.plainString() // most keys: a sub-slice, no copy
		if !plain {
			var err error
			if key, err = s.appendString(s.kbuf[:0]); err != nil {
				return err
			}
			s.kbuf = key[:0]
		}
		if s.peek() != ':' {
			return s.syntax("expected ':' after object key")
		}
		s.i++
		s.ws()
		if err := f(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.syntax("expected ',' or '}' in object")
		}
	}
}

// array reads an array, calling f for each element with the scanner placed
// at it; f must consume it.
func (s *scanner) array(path string, f func(i int) error) error {
	return s.arrayField(path, "", f)
}

// arrayField is array for the field path+field (joined only for an error).
func (s *scanner) arrayField(path, field string, f func(i int) error) error {
	if s.peek() == 0 {
		return s.syntax("expected an array")
	}
	if s.peek() != '[' {
		return Errorf(InvalidArgument, "%s%s: must be an array", path, field)
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		s.ws()
		if err := f(n); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.syntax("expected ',' or ']' in array")
		}
	}
}

// str reads a JSON string value.
func (s *scanner) str(path string) (string, error) {
	return s.strField(path, "")
}

// strField is str for the field path+field (joined only for an error).
func (s *scanner) strField(path, field string) (string, error) {
	if s.peek() == 0 {
		return "", s.syntax("expected a string")
	}
	if s.peek() != '"' {
		return "", Errorf(InvalidArgument, "%s%s: must be a string", path, field)
	}
	// Fast path: no escapes.
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			return string(s.b[start:j]), nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
	}
	b, err := s.appendString(nil)
	return string(b), err
}

// plainString reads a string without escapes or control characters (the
// scanner at its opening quote) as a sub-slice of the input, not a copy;
// false, the scanner unmoved, for any other string.
func (s *scanner) plainString() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			return s.b[start:j], true
		}
		if c == '\\' || c < 0x20 {
			break
		}
	}
	return nil, false
}

// appendString reads a JSON string (scanner at its opening quote) and
// appends its unescaped bytes to dst.
func (s *scanner) appendString(dst []byte) ([]byte, error) {
	s.i++ // opening quote
	for {
		start := s.i
		for s.i < len(s.b) {
			c := s.b[s.i]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			s.i++
		}
		dst = append(dst, s.b[start:s.i]...)
		if s.i >= len(s.b) {
			return dst, s.syntax("unterminated string")
		}
		c := s.b[s.i]
		if c == '"' {
			s.i++
			return dst, nil
		}
		if c < 0x20 {
			return dst, s.syntax("control character in string")
		}
		// escape
		s.i++
		if s.i >= len(s.b) {
			return dst, s.syntax("unterminated escape")
		}
		e := s.b[s.i]
		s.i++
		switch e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return dst, s.syntax("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					if lo, ok := s.hex4(); ok {
						r2 = utf16.DecodeRune(r, lo)
					}
					if r2 == utf8.RuneError {
						s.i = save
					}
				}
				r = r2
			}
			dst = utf8.AppendRune(dst, r)
		default:
			s.i--
			return dst, s.syntax("bad escape")
		}
	}
}

func (s *scanner) hex4() (rune, bool) {
	if len(s.b)-s.i < 4 {
		return 0, false
	}
	var r rune
	for k := 0; k < 4; k++ {
		c := s.b[s.i+k]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.i += 4
	return r, true
}

// number scans a JSON number token and reports whether it is an integer
// literal (no fraction or exponent).
func (s *scanner) number() (tok []byte, isInt bool, ok bool) {
	start := s.i
	j := s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	if j >= len(s.b) {
		return nil, false, false
	}
	switch c := s.b[j]; {
	case c == '0':
		j++
	case c >= '1' && c <= '9':
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
	default:
		return nil, false, false
	}
	isInt = true
	if j < len(s.b) && s.b[j] == '.' {
		isInt = false
		j++
		d := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		if j == d {
			return nil, false, false
		}
	}
	if j < len(s.b) && (s.b[j] == 'e' || s.b[j] == 'E') {
		isInt = false
		j++
		if j < len(s.b) && (s.b[j] == '+' || s.b[j] == '-') {
			j++
		}
		d := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		if j == d {
			return nil, false, false
		}
	}
	s.i = j
	return s.b[start:j], isInt, true
}

// float reads a number as float64 (bits = 32 rounds it to float32
// precision). Values that overflow the type are rejected.
func (s *scanner) float(bits int) (float64, string) {
	if f, n, ok := scanFastFloat(s.b[s.i:], bits); ok {
		s.i += n
		return f, ""
	}
	if s.lenient {
		switch {
		case s.literal("NaN"):
			return math.NaN(), ""
		case s.literal("Infinity"):
			return math.Inf(1), ""
		case s.literal("-Infinity"):
			return math.Inf(-1), ""
		}
	}
	tok, _, ok := s.number()
	if !ok {
		return 0, s.badValue("a number")
	}
	if f, ok := fastFloat(tok, bits); ok {
		return f, ""
	}
	f, err := strconv.ParseFloat(unsafe.String(&tok[0], len(tok)), bits)
	if err != nil || math.IsInf(f, 0) {
		return 0, string(tok) + " is out of range for FP" + strconv.Itoa(bits)
	}
	return f, ""
}

// integer reads an integer literal as sign and magnitude.
func (s *scanner) integer() (neg bool, mag uint64, msg string) {
	tok, isInt, ok := s.number()
	if !ok {
		return false, 0, s.badValue("an integer")
	}
	if !isInt {
		return false, 0, string(tok) + " is not an integer"
	}
	d := tok
	if d[0] == '-' {
		neg = true
		d = d[1:]
	}
	for _, c := range d {
		v := uint64(c - '0')
		if mag > (math.MaxUint64-v)/10 {
			return false, 0, string(tok) + " is out of range"
		}
		mag = mag*10 + v
	}
	return neg, mag, ""
}

// badValue describes what is at the scanner when a value of kind was wanted.
func (s *scanner) badValue(want string) string {
	if s.i >= len(s.b) {
		return "expected " + want + ", found end of input"
	}
	switch c := s.b[s.i]; c {
	case '"':
		return "expected " + want + ", found a string"
	case '[':
		return "expected " + want + ", found an array"
	case '{':
		return "expected " + want + ", found an object"
	case 't', 'f':
		return "expected " + want + ", found a boolean"
	case 'n':
		return "expected " + want + ", found null"
	default:
		return "expected " + want + ", found " + strconv.QuoteRune(rune(c))
	}
}

// skip consumes any JSON value.
func (s *scanner) skip() error { return s.skipDepth(0) }

func (s *scanner) skipDepth(depth int) error {
	if depth > maxNesting {
		return s.syntax("nesting too deep")
	}
	switch s.peek() {
	case '{':
		return s.object("value", func([]byte) error { return s.skipDepth(depth + 1) })
	case '[':
		return s.array("value", func(int) error { return s.skipDepth(depth + 1) })
	case '"':
		_, err := s.appendStringSkip()
		return err
	case 't':
		if s.literal("true") {
			return nil
		}
	case 'f':
		if s.literal("false") {
			return nil
		}
	case 'n':
		if s.literal("null") {
			return nil
		}
	default:
		if _, _, ok := s.number(); ok {
			return nil
		}
	}
	return s.syntax("expected a JSON value")
}

// appendStringSkip consumes a string without keeping it.
func (s *scanner) appendStringSkip() (int, error) {
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return 0, nil
		case c == '\\':
			s.i += 2
		case c < 0x20:
			return 0, s.syntax("control character in string")
		default:
			s.i++
		}
	}
	return 0, s.syntax("unterminated string")
}

// end checks nothing but whitespace follows.
func (s *scanner) end() error {
	if s.peek() != 0 {
		return s.syntax("unexpected data after the JSON value")
	}
	return nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// fastFloat converts a JSON number token exactly when it can (Clinger's fast
// path: at most 15 significant digits and a power of ten within 1e±22, so a
// single correctly rounded multiply or divide gives the float64). For
// float32 the float64 result is rounded again, which is exact unless it lies
// on a float32 rounding midpoint; then, and whenever the fast path does not
// apply, it reports false and the caller uses strconv.
func fastFloat(tok []byte, bits int) (float64, bool) {
	f, n, ok := scanFastFloat(tok, bits)
	return f, ok && n == len(tok)
}

// scanFastFloat reads the JSON number at the start of b in one pass and
// converts it as fastFloat does; n is the token's length. ok is false when
// b does not start with a JSON number or the fast path does not apply (the
// caller then scans the token again with number and uses strconv).
func scanFastFloat(b []byte, bits int) (f float64, n int, ok bool) {
	i := 0
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	if i >= len(b) {
		return 0, 0, false
	}
	var mant uint64
	digits, exp := 0, 0
	switch c := b[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if digits++; digits > 15 {
				return 0, 0, false
			}
			mant = mant*10 + uint64(b[i]-'0')
		}
	default:
		return 0, 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		if mant == 0 { // leading zeros of the fraction are not significant
			for ; i < len(b) && b[i] == '0'; i++ {
				exp--
			}
		}
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if digits++; digits > 15 {
				return 0, 0, false
			}
			mant = mant*10 + uint64(b[i]-'0')
			exp--
		}
		if i == start {
			return 0, 0, false // no digit after '.'
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		start, e := i, 0
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if e = e*10 + int(b[i]-'0'); e > 400 {
				return 0, 0, false
			}
		}
		if i == start {
			return 0, 0, false // no exponent digits
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	f = float64(mant)
	switch {
	case mant == 0:
	case exp >= 0 && exp <= 22:
		f *= pow10[exp]
	case exp < 0 && exp >= -22:
		f /= pow10[-exp]
	default:
		return 0, 0, false
	}
	if bits == 32 {
		if f > math.MaxFloat32 {
			return 0, 0, false
		}
		// A float64 with its low 29 mantissa bits equal to 1<<28 sits on a
		// float32 midpoint: double rounding could be off by one ulp there.
		if math.Float64bits(f)&(1<<29-1) == 1<<28 {
			return 0, 0, false
		}
		f = float64(float32(f))
	}
	if neg {
		f = -f
	}
	return f, i, true
}
