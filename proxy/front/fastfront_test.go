package front

import "testing"

func TestOriginPath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/v2/models/m/infer", "/v2/models/m/infer"},
		{"http://h:8000/v2/models/m/infer", "/v2/models/m/infer"},
		{"HTTPS://h/v2", "/v2"},
		{"http://h", "/"},
		{"*", "*"},
		{"", ""},
	} {
		if got := string(originPath([]byte(c.in))); got != c.want {
			t.Errorf("originPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
