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

// StartHead writes the status line and, unless empty, Content-Type. More
// header lines ("Name: value\r\n") may follow; EndHead ends the head.
func StartHead(bw *bufio.Writer, status int, contentType string) {
	WriteStatusLine(bw, status)
	if contentType != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(contentType)
		bw.WriteString("\r\n")
	}
}

// EndHead writes Connection: close (when close), Content-Length: n and the
// blank line that ends the head.
func EndHead(bw *bufio.Writer, n int, close bool) {
	if close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("Content-Length: ")
	WriteInt(bw, n)
	bw.WriteString("\r\n\r\n")
}

// WriteResponse writes a whole answer: head (StartHead, EndHead) and body.
func WriteResponse(bw *bufio.Writer, status int, contentType string, body []byte, close bool) {
	StartHead(bw, status, contentType)
	EndHead(bw, len(body), close)
	bw.Write(body)
}

// WriteError writes a JSON {"error": msg} answer with status.
func WriteError(bw *bufio.Writer, status int, msg string, close bool) {
	WriteResponse(bw, status, "application/json", ErrorJSON(msg), close)
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
