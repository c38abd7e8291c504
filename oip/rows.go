package oip

import "fmt"

// Joining and splitting tensors along dimension 0 (the rows of a batch):
// the backend's dynamic batcher and the proxy's batched shadow calls both
// join requests into one run and cut the answer back.

// JoinRows concatenates parts along dimension 0: the result has the first
// part's name, datatype, parameters and inner dimensions, and the sum of the
// parts' first dimensions. The caller checks the parts agree (same
// datatype and inner dimensions, rank >= 1); the parts are not modified.
func JoinRows(parts []*Tensor) Tensor {
	first := parts[0]
	var rows int64
	size := 0
	for _, p := range parts {
		rows += p.Shape[0]
		size += len(p.Raw)
	}
	raw := make([]byte, 0, size)
	for _, p := range parts {
		raw = append(raw, p.Raw...)
	}
	return Tensor{Name: first.Name, Datatype: first.Datatype, Parameters: first.Parameters,
		Shape: append([]int64{rows}, first.Shape[1:]...), Raw: raw}
}

// SplitRows cuts t along dimension 0 into pieces of rows[i] rows, in order;
// the pieces share t's bytes. t must have fixed-size elements and a first
// dimension equal to the sum of rows; otherwise the error names t.
func SplitRows(t *Tensor, rows []int64) ([]Tensor, error) {
	var total int64
	for _, n := range rows {
		total += n
	}
	switch {
	case t.Datatype.Size() == 0:
		return nil, fmt.Errorf("output %q has variable-size elements (%s)", t.Name, t.Datatype)
	case len(t.Shape) == 0 || t.Shape[0] != total:
		return nil, fmt.Errorf("output %q has shape %v, not %d rows first", t.Name, t.Shape, total)
	case total == 0 || int64(len(t.Raw))%total != 0:
		return nil, fmt.Errorf("output %q holds %d bytes, not a multiple of %d rows", t.Name, len(t.Raw), total)
	}
	rowBytes := int64(len(t.Raw)) / total
	out := make([]Tensor, len(rows))
	var off int64
	for k, n := range rows {
		lo, hi := off*rowBytes, (off+n)*rowBytes
		out[k] = Tensor{Name: t.Name, Datatype: t.Datatype, Parameters: t.Parameters,
			Shape: append([]int64{n}, t.Shape[1:]...), Raw: t.Raw[lo:hi:hi]}
		off += n
	}
	return out, nil
}
