// Package routing holds the pure routing decisions the proxy makes with a
// Model document (package api): the sticky weighted variant picker
// (pick.go). Package routing/xdsconv translates the document to xDS and
// back.
package routing
