package h1

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// WriteInt writes n in decimal without allocating (formatted in the
// writer's free space).
func WriteInt(bw *bufio.Writer, n int) {
	if bw.Available() < 20 {
		bw.Flush()
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 10))
}

// WriteStatusLine writes "HTTP/1.1 <status> <text>\r\n".
func WriteStatusLine(bw *bufio.Writer, status int) {
	if status == http.StatusOK {
		bw.WriteString("HTTP/1.1 200 OK\r\n")
		return
	}
	bw.WriteString("HTTP/1.1 ")
	WriteInt(bw, status)
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(status))
	bw.WriteString("\r\n")
}

// WriteResponse writes a whole answer: status line, Content-Type (unless
// empty), any extra header lines (each "Name: value\r\n"), Connection:
// close when close, Content-Length and the body.
func WriteResponse(bw *bufio.Writer, status int, contentType, extra string, body []byte, close bool) {
	WriteStatusLine(bw, status)
	if contentType != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(contentType)
		bw.WriteString("\r\n")
	}
	bw.WriteString(extra)
	if close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("Content-Length: ")
	WriteInt(bw, len(body))
	bw.WriteString("\r\n\r\n")
	bw.Write(body)
}

// WriteError writes a JSON {"error": msg} answer with status.
func WriteError(bw *bufio.Writer, status int, msg string, close bool) {
	WriteResponse(bw, status, "application/json", "", ErrorJSON(msg), close)
}

// ErrorJSON is {"error": msg} as valid JSON whatever msg holds (control
// characters escaped, invalid UTF-8 replaced; strconv.Quote's \x and \U
// escapes are not JSON).
func ErrorJSON(msg string) []byte {
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"error":"`...)
	for _, c := range strings.ToValidUTF8(msg, "\uFFFD") {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', byte(c))
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c < 0x20 || c == 0x7f || c == 0x2028 || c == 0x2029:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = utf8.AppendRune(b, c)
		}
	}
	return append(b, `"}`...)
}
