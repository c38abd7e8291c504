package proxy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// The upgrade fixture is the persisted configuration an earlier release
// wrote (testdata/upgrade/proxy-config.json, the models of the control
// plane's upgrade fixture) and the models that release served from it
// (testdata/upgrade/models.json). Regenerate only when the format changes
// on purpose, with the old code:
//
//	go test ./proxy -run TestUpgradeReadsPreviousStateFile -write-upgrade-fixture
var writeUpgradeFixture = flag.Bool("write-upgrade-fixture", false, "write testdata/upgrade (a persisted configuration and the models served from it) with this code")

const upgradeDir = "testdata/upgrade"

func writeProxyUpgradeFixture(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("../controlplane/testdata/upgrade/golden/models.json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Revision int64 `json:"revision"`
		Items    []struct {
			Model json.RawMessage `json:"model"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	var models []api.Model
	for _, it := range list.Items {
		m, err := api.DecodeJSON(it.Model)
		if err != nil {
			t.Fatal(err)
		}
		models = append(models, m)
	}
	if err := os.RemoveAll(upgradeDir); err != nil {
		t.Fatal(err)
	}
	st := persistedState{Version: "7", NodeID: "proxy-a", SavedAt: time.Date(2026, 12, 3, 7, 40, 0, 0, time.UTC), Models: models}
	if err := writeState(upgradeDir, st); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeReadsPreviousStateFile starts a proxy on the persisted
// configuration an earlier release wrote: it serves every model of it, the
// same documents that release served, and writes the file back unchanged.
func TestUpgradeReadsPreviousStateFile(t *testing.T) {
	if *writeUpgradeFixture {
		writeProxyUpgradeFixture(t)
	}
	src, err := os.ReadFile(filepath.Join(upgradeDir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), src, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Config{NodeID: "proxy-a", StateDir: dir})
	d := p.ConfigDump()
	if d.Source != SourcePersisted || d.Version != "7" {
		t.Fatalf("config_dump: source %q version %q, want %q %q", d.Source, d.Version, SourcePersisted, "7")
	}
	models, _, _ := p.Models()
	for _, name := range []string{"recommender", "search"} {
		if p.Route(name) == nil {
			t.Errorf("no route for %s", name)
		}
	}
	got, err := json.MarshalIndent(models, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join(upgradeDir, "models.json")
	if *writeUpgradeFixture {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("served models differ from %s:\n got: %s\nwant: %s", golden, got, want)
	}
	// Written back by this code, the state is byte for byte the old file.
	var st persistedState
	if err := json.Unmarshal(src, &st); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := writeState(out, st); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(filepath.Join(out, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, src) {
		t.Errorf("re-written state differs from the old file:\n got: %s\nwant: %s", again, src)
	}
}
