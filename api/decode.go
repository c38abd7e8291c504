package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DecodeJSON decodes one Model document strictly: malformed JSON, trailing
// data, unknown fields (matched case-sensitively) and values of the wrong
// type are errors. A field problem is a ValidationError naming the field
// ("spec.traffic.wieghts: unknown field (allowed: weights, stickyHeader,
// overrideHeader)"). DecodeJSON neither applies defaults nor validates; see
// Normalize.
func DecodeJSON(data []byte) (Model, error) {
	var m Model
	err := DecodeJSONInto(data, &m)
	return m, err
}

// DecodeJSONInto strictly decodes data into v (a pointer to any of this
// package's types, or a struct made of them), with the same rules as
// DecodeJSON. The REST API uses it for its smaller bodies.
func DecodeJSONInto(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return syntaxError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("malformed JSON: trailing data after the document")
	}
	rt := reflect.TypeOf(v)
	if rt == nil || rt.Kind() != reflect.Pointer {
		return fmt.Errorf("api: DecodeJSONInto needs a pointer, got %T", v)
	}
	c := &checker{}
	c.check(raw, rt.Elem(), "")
	if len(c.errs) > 0 {
		return c.errs
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

func syntaxError(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(data, se.Offset)
		return fmt.Errorf("malformed JSON at line %d, column %d: %v", line, col, se)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("malformed JSON: unexpected end of input")
	}
	return fmt.Errorf("malformed JSON: %v", err)
}

func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// DecodeYAML decodes exactly one Model document from YAML with the rules of
// DecodeJSON (the YAML is read into plain values, then checked and decoded
// as JSON, so both formats accept the same documents).
func DecodeYAML(data []byte) (Model, error) {
	ms, err := DecodeYAMLAll(data)
	if err != nil {
		return Model{}, err
	}
	if len(ms) != 1 {
		return Model{}, fmt.Errorf("want exactly one YAML document, got %d", len(ms))
	}
	return ms[0], nil
}

// DecodeYAMLAll decodes every document of a multi-document YAML stream
// ("---" separated); empty documents are skipped.
func DecodeYAMLAll(data []byte) ([]Model, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Model
	for i := 0; ; i++ {
		var raw any
		err := dec.Decode(&raw)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("malformed YAML (document %d): %v", i+1, err)
		}
		if raw == nil {
			continue
		}
		plain, err := yamlToJSONValue(raw, "")
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		b, err := json.Marshal(plain)
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i+1, err)
		}
		m, err := DecodeJSON(b)
		if err != nil {
			if len(out) > 0 || i > 0 {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			return nil, err
		}
		out = append(out, m)
	}
}

// YAMLValueToJSON turns a value decoded from YAML into one encoding/json can
// marshal (string map keys, timestamps as their text; NaN/Inf refused,
// naming the field). syctl uses it to send YAML documents as JSON.
func YAMLValueToJSON(v any) (any, error) { return yamlToJSONValue(v, "") }

// yamlToJSONValue is YAMLValueToJSON below path.
func yamlToJSONValue(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := yamlToJSONValue(e, join(path, k))
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			ks := fmt.Sprint(k)
			c, err := yamlToJSONValue(e, join(path, ks))
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := yamlToJSONValue(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, ValidationError{{Field: path, Message: "NaN and Inf are not allowed"}}
		}
		return x, nil
	}
	return v, nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Normalize applies Defaults and then Validate.
func Normalize(m *Model) error {
	m.Defaults()
	return m.Validate()
}

// checker walks a decoded JSON value against a Go type and records unknown
// fields and type mismatches with their paths.
type checker struct{ errs ValidationError }

func (c *checker) add(path, format string, args ...any) {
	if path == "" {
		path = "(document)"
	}
	c.errs = append(c.errs, FieldError{Field: path, Message: fmt.Sprintf(format, args...)})
}

var durationType = reflect.TypeOf(Duration(0))

func (c *checker) check(v any, t reflect.Type, path string) {
	if v == nil {
		return // null: zero value, like encoding/json
	}
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			c.add(path, "want a duration string such as \"50ms\", got %s", describe(v))
			return
		}
		if _, err := time.ParseDuration(s); err != nil {
			c.add(path, "want a duration such as \"50ms\" or \"1m30s\", got %q", s)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		c.check(v, t.Elem(), path)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			c.add(path, "want an object, got %s", describe(v))
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				c.add(join(path, k), "unknown field%s (allowed: %s)", suggest(k, fields), strings.Join(fieldNames(t), ", "))
				continue
			}
			c.check(obj[k], t.Field(f).Type, join(path, k))
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			c.add(path, "want an object, got %s", describe(v))
			return
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c.check(obj[k], t.Elem(), join(path, k))
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			c.add(path, "want a list, got %s", describe(v))
			return
		}
		for i, e := range arr {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.add(path, "want a string, got %s", describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.add(path, "want true or false, got %s", describe(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			c.add(path, "want an integer, got %s", describe(v))
			return
		}
		i, err := strconv.ParseInt(string(n), 10, t.Bits())
		if err != nil {
			f, ferr := n.Float64()
			if ferr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				return // 1e3 or 100.0: a whole number
			}
			c.add(path, "want an integer, got %s", n)
			return
		}
		_ = i
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			c.add(path, "want a number, got %s", describe(v))
		}
	}
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case json.Number:
		return "the number " + string(x)
	case bool:
		return strconv.FormatBool(x)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}

func jsonFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = i
	}
	return out
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

func suggest(k string, fields map[string]int) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return ""
}
