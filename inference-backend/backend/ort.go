package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// EnvORTLibrary names the environment variable that points at the ONNX
// Runtime shared library.
const EnvORTLibrary = "SWITCHYARD_ORT_LIB"

// ortRelPath is where `make setup` puts the library, relative to the
// repository root.
var ortRelPath = filepath.Join("third_party", "onnxruntime", "libonnxruntime.so.1")

// FindORTLibrary resolves the ONNX Runtime shared library: the explicit path
// if given, else $SWITCHYARD_ORT_LIB, else third_party/onnxruntime/
// libonnxruntime.so.1 found by walking up from the working directory and
// then from the executable's directory. The result is absolute.
func FindORTLibrary(explicit string) (string, error) {
	check := func(p, from string) (string, error) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("onnx runtime library %s (from %s): %w", abs, from, err)
		}
		return abs, nil
	}
	if explicit != "" {
		return check(explicit, "--ort-lib")
	}
	if p := os.Getenv(EnvORTLibrary); p != "" {
		return check(p, "$"+EnvORTLibrary)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err := filepath.EvalSymlinks(exe); err == nil {
			starts = append(starts, filepath.Dir(exe))
		}
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, ortRelPath)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("onnx runtime library not found: pass --ort-lib, set $%s, or run `make setup` to fetch %s", EnvORTLibrary, ortRelPath)
}

// ortEnv is the process's ONNX Runtime environment. ONNX Runtime allows one
// environment per process, so this is the one piece of package-level state:
// it is initialised once and never torn down.
var ortEnv struct {
	mu   sync.Mutex
	path string
	err  error
}

// InitORT initialises ONNX Runtime once per process with the library at
// path (see FindORTLibrary; "" searches). Later calls return the first
// call's result; a later call naming a different library is an error.
func InitORT(path string) (string, error) {
	ortEnv.mu.Lock()
	defer ortEnv.mu.Unlock()
	if ortEnv.path != "" || ortEnv.err != nil {
		if ortEnv.err == nil && path != "" {
			if abs, _ := filepath.Abs(path); abs != ortEnv.path {
				return ortEnv.path, fmt.Errorf("onnx runtime already initialised from %s, cannot switch to %s", ortEnv.path, abs)
			}
		}
		return ortEnv.path, ortEnv.err
	}
	lib, err := FindORTLibrary(path)
	if err != nil {
		return "", err // not sticky: a later call may pass a path
	}
	if !ort.IsInitialized() {
		// ONNX Runtime's own log goes to stderr; keep it to fatal errors:
		// every failure is returned as an error and logged by the backend.
		ort.SetSharedLibraryPath(lib)
		if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
			ortEnv.err = fmt.Errorf("initialise onnx runtime from %s (need ONNX Runtime 1.24 or newer): %w", lib, err)
			return "", ortEnv.err
		}
	}
	ortEnv.path = lib
	return lib, nil
}

// ORTVersion is the version string of the loaded ONNX Runtime, or "" before
// InitORT succeeded.
func ORTVersion() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}

var errNotInitialised = errors.New("onnx runtime is not initialised (call InitORT)")
