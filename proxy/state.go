package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// StateFile is the name of the persisted configuration in Config.StateDir.
const StateFile = "proxy-config.json"

// persistedState is the on-disk form of the last good configuration.
type persistedState struct {
	Version string      `json:"version"`
	NodeID  string      `json:"nodeId"`
	SavedAt time.Time   `json:"savedAt"`
	Models  []api.Model `json:"models"`
}

// persist writes the configuration atomically (temp file + rename).
func (p *Proxy) persist(models []api.Model, version string) {
	if p.cfg.StateDir == "" {
		return
	}
	if err := writeState(p.cfg.StateDir, persistedState{Version: version, NodeID: p.cfg.NodeID, SavedAt: time.Now().UTC(), Models: models}); err != nil {
		p.log.Error("cannot persist configuration", "dir", p.cfg.StateDir, "error", err)
	}
}

func writeState(dir string, st persistedState) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, StateFile+".tmp*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, StateFile))
}

// loadPersisted applies the persisted configuration, if there is one.
func (p *Proxy) loadPersisted() error {
	path := filepath.Join(p.cfg.StateDir, StateFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st persistedState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := p.Apply(st.Models, st.Version, SourcePersisted); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	p.persisted = path
	p.log.Warn("serving the persisted configuration until the control plane answers",
		"file", path, "version", st.Version, "saved_at", st.SavedAt, "models", len(st.Models))
	return nil
}
