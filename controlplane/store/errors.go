package store

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"github.com/switchyard-dev/switchyard/api"
)

// Failure tells an error of a store call that is a failure of the store
// (I/O, a full disk, a corrupt file) from an answer about the request
// (conflict, not found, invalid document) or its end (cancelled, store
// closed).
func Failure(err error) bool {
	var ve api.ValidationError
	switch {
	case err == nil, errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound), errors.Is(err, ErrClosed),
		errors.As(err, &ve), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// OutOfSpace reports a write that failed for want of space: ENOSPC,
// EFBIG (a file size limit) or EDQUOT, also where bbolt kept only the text
// of the cause ("file resize error: ... file too large").
func OutOfSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	s := err.Error()
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EFBIG, syscall.EDQUOT} {
		if strings.Contains(s, e.Error()) {
			return true
		}
	}
	return false
}
