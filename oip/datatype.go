package oip

import "fmt"

// Datatype is an OIP v2 tensor datatype name, e.g. "FP32".
type Datatype string

// The OIP v2 datatypes.
const (
	BOOL   Datatype = "BOOL"
	UINT8  Datatype = "UINT8"
	UINT16 Datatype = "UINT16"
	UINT32 Datatype = "UINT32"
	UINT64 Datatype = "UINT64"
	INT8   Datatype = "INT8"
	INT16  Datatype = "INT16"
	INT32  Datatype = "INT32"
	INT64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	BYTES  Datatype = "BYTES"
)

// Datatypes lists every datatype, in the order the specification gives them.
var Datatypes = []Datatype{BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES}

// Size is the width in bytes of one element, or 0 for BYTES (variable).
func (d Datatype) Size() int {
	switch d {
	case BOOL, UINT8, INT8:
		return 1
	case UINT16, INT16, FP16:
		return 2
	case UINT32, INT32, FP32:
		return 4
	case UINT64, INT64, FP64:
		return 8
	}
	return 0
}

// Valid reports whether d is one of the OIP v2 datatypes.
func (d Datatype) Valid() bool {
	return d == BYTES || d.Size() > 0
}

// IsFloat reports whether d is a floating-point type (FP16, FP32, FP64).
func (d Datatype) IsFloat() bool { return d == FP16 || d == FP32 || d == FP64 }

// ParseDatatype checks s names an OIP v2 datatype.
func ParseDatatype(s string) (Datatype, error) {
	d := Datatype(s)
	if !d.Valid() {
		return "", fmt.Errorf("unknown datatype %q (allowed: BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES)", s)
	}
	return d, nil
}
