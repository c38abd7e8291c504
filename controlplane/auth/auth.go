// Package auth is who may call the control plane: the tokens file
// (subjects, roles, bearer tokens), the roles' order, and the lookup of a
// bearer token that the REST API (controlplane/rest) and the xDS and stats
// streams (controlplane/xds) both use.
package auth

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Role is what a caller may do. Each role includes the ones below it.
type Role int

// Roles, from least to most powerful.
const (
	// RoleViewer reads everything.
	RoleViewer Role = iota + 1
	// RoleEditor (ML engineer) also changes models, weights, shadow and
	// canary settings.
	RoleEditor
	// RoleOperator (on-call) may do everything, including rollback and
	// delete.
	RoleOperator
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleEditor:
		return "editor"
	case RoleOperator:
		return "operator"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// ParseRole reads "viewer", "editor" or "operator".
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return RoleViewer, nil
	case "editor":
		return RoleEditor, nil
	case "operator":
		return RoleOperator, nil
	}
	return 0, fmt.Errorf("unknown role %q (allowed: viewer, editor, operator)", s)
}

// Identity is an authenticated caller.
type Identity struct {
	Subject string
	Role    Role
}

// Token is one entry of the tokens file.
type Token struct {
	Subject string `yaml:"subject" json:"subject"`
	Role    string `yaml:"role" json:"role"`
	Token   string `yaml:"token" json:"token"`
}

// TokensFile is the --tokens file:
//
//	tokens:
//	  - {subject: alice, role: editor, token: "…at least 16 characters…"}
//	  - {subject: oncall, role: operator, token: "…"}
type TokensFile struct {
	Tokens []Token `yaml:"tokens" json:"tokens"`
}

// MinTokenLength is the shortest accepted bearer token.
const MinTokenLength = 16

// Authenticator maps bearer tokens to identities. The zero value accepts
// nothing.
type Authenticator struct {
	byHash    map[[sha256.Size]byte]Identity
	anonymous *Identity // insecure loopback mode
}

// NewAuthenticator checks the tokens: subjects and tokens non-empty, roles
// known, tokens at least MinTokenLength characters and unique.
func NewAuthenticator(tokens []Token) (*Authenticator, error) {
	a := &Authenticator{byHash: map[[sha256.Size]byte]Identity{}}
	for i, t := range tokens {
		where := fmt.Sprintf("tokens[%d]", i)
		if strings.TrimSpace(t.Subject) == "" {
			return nil, fmt.Errorf("%s.subject: required", where)
		}
		role, err := ParseRole(t.Role)
		if err != nil {
			return nil, fmt.Errorf("%s.role: %v", where, err)
		}
		if len(t.Token) < MinTokenLength || strings.ContainsAny(t.Token, " \t\r\n") {
			return nil, fmt.Errorf("%s.token: at least %d characters without whitespace", where, MinTokenLength)
		}
		h := sha256.Sum256([]byte(t.Token))
		if _, dup := a.byHash[h]; dup {
			return nil, fmt.Errorf("%s.token: the same token is given twice", where)
		}
		a.byHash[h] = Identity{Subject: t.Subject, Role: role}
	}
	return a, nil
}

// LoadTokens reads a tokens file (YAML or JSON, unknown fields rejected).
func LoadTokens(path string) (*Authenticator, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	var f TokensFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("tokens file %s: %v", path, err)
	}
	if len(f.Tokens) == 0 {
		return nil, fmt.Errorf("tokens file %s: no tokens", path)
	}
	a, err := NewAuthenticator(f.Tokens)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return a, nil
}

// InsecureLoopback returns an authenticator that lets every request in as
// subject "anonymous" with the operator role. Use only on a loopback
// address (controlplane.New enforces this).
func InsecureLoopback() *Authenticator {
	return &Authenticator{anonymous: &Identity{Subject: "anonymous", Role: RoleOperator}}
}

// Authenticate returns the caller of r, or ok=false.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, bool) {
	if a == nil {
		return Identity{}, false
	}
	if a.anonymous != nil {
		return *a.anonymous, true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Identity{}, false
	}
	return a.Lookup(strings.TrimSpace(tok))
}

// Lookup maps a bearer token to its identity.
func (a *Authenticator) Lookup(tok string) (Identity, bool) {
	if a == nil || a.byHash == nil {
		return Identity{}, false
	}
	id, ok := a.byHash[sha256.Sum256([]byte(tok))]
	return id, ok
}

// Anonymous reports whether a lets every caller in (InsecureLoopback).
func (a *Authenticator) Anonymous() bool { return a != nil && a.anonymous != nil }

// IsLoopback reports whether addr (host:port) names a loopback address:
// 127.0.0.0/8, ::1 or "localhost".
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
