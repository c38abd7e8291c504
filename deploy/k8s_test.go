package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3" // resolves the bootstrap's typed options
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

var update = flag.Bool("update", false, "rewrite k8s/components/prometheus-operator/prometheusrule.yaml from prometheus/rules")

// object is one Kubernetes object.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }
func (o object) name() string { s, _ := dig(o, "metadata", "name").(string); return s }
func (o object) namespace() string {
	s, _ := dig(o, "metadata", "namespace").(string)
	return s
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := asMap(v)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case object:
		return m, true
	}
	return nil, false
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func decodeDocs(t *testing.T, where string, r io.Reader) []object {
	t.Helper()
	dec := yaml.NewDecoder(r)
	var out []object
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if doc != nil {
			out = append(out, object(doc))
		}
	}
}

var (
	renderMu    sync.Mutex
	renderCache = map[string][]object{}
)

// renderDir is what `kubectl kustomize dir` renders. Without kubectl it
// falls back to the plain files the kustomizations name (patches not
// applied).
func renderDir(t *testing.T, dir string) []object {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if objs, ok := renderCache[dir]; ok {
		return objs
	}
	var objs []object
	kubectl, err := exec.LookPath("kubectl")
	if os.Getenv("SWITCHYARD_DEPLOY_NO_KUBECTL") != "" {
		err = errors.New("SWITCHYARD_DEPLOY_NO_KUBECTL is set")
	}
	if err == nil {
		cmd := exec.Command(kubectl, "kustomize", dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
		}
		objs = decodeDocs(t, "kustomize "+dir, bytes.NewReader(out))
	} else {
		t.Logf("no kubectl (%v): reading %s's files without kustomize", err, dir)
		objs = plainResources(t, dir)
	}
	renderCache[dir] = objs
	return objs
}

func plainResources(t *testing.T, dir string) []object {
	var k struct {
		Resources  []string `yaml:"resources"`
		Components []string `yaml:"components"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	var out []object
	for _, r := range append(k.Resources, k.Components...) {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, plainResources(t, p)...)
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeDocs(t, p, f)...)
		f.Close()
	}
	return out
}

// TestEveryFileParses: every YAML file (all documents) and JSON file under
// deploy/ parses.
func TestEveryFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			dec := yaml.NewDecoder(f)
			for i := 0; ; i++ {
				var v any
				if err := dec.Decode(&v); err == io.EOF {
					break
				} else if err != nil {
					t.Errorf("%s document %d: %v", path, i+1, err)
					break
				}
			}
			n++
		case ".json":
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 15 {
		t.Fatalf("only %d files checked", n)
	}
}

// --- the switchyard binary's flags ---

type flagInfo struct {
	Bool   bool
	Help   string
	Listen bool // the help says it is a listen address
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func switchyardBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploy-test-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "switchyard")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/switchyard").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ../cmd/switchyard: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	flagsMu    sync.Mutex
	flagsCache = map[string]map[string]flagInfo{}
	reFlagLine = regexp.MustCompile(`^  -([a-zA-Z0-9-]+)(?: (\S+))?$`)
	reCmdLine  = regexp.MustCompile(`^  ([a-z][a-z0-9-]*) +\S`)
)

// subcommands lists the binary's commands (from `switchyard -h`).
func subcommands(t *testing.T) []string {
	out, _ := exec.Command(switchyardBinary(t), "-h").CombinedOutput()
	var cmds []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := reCmdLine.FindStringSubmatch(l); m != nil {
			cmds = append(cmds, m[1])
		}
	}
	if len(cmds) < 4 {
		t.Fatalf("switchyard -h lists %d commands:\n%s", len(cmds), out)
	}
	return cmds
}

// commandFlags parses `switchyard <cmd> -h`.
func commandFlags(t *testing.T, cmd string) map[string]flagInfo {
	t.Helper()
	flagsMu.Lock()
	defer flagsMu.Unlock()
	if f, ok := flagsCache[cmd]; ok {
		return f
	}
	out, err := exec.Command(switchyardBinary(t), cmd, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("switchyard %s -h: %v\n%s", cmd, err, out)
	}
	flags := map[string]flagInfo{}
	var last string
	for _, l := range strings.Split(string(out), "\n") {
		if m := reFlagLine.FindStringSubmatch(l); m != nil {
			last = m[1]
			flags[last] = flagInfo{Bool: m[2] == ""}
			continue
		}
		if last != "" && strings.HasPrefix(l, "    \t") {
			fi := flags[last]
			fi.Help += strings.TrimSpace(l) + " "
			fi.Listen = strings.Contains(fi.Help, "listen")
			flags[last] = fi
		}
	}
	if len(flags) == 0 {
		t.Fatalf("switchyard %s -h shows no flags:\n%s", cmd, out)
	}
	flagsCache[cmd] = flags
	return flags
}

// container is one container of a pod template.
type container struct {
	Owner string // kind/name
	Pod   map[string]any
	Spec  map[string]any
}

func (c container) name() string { s, _ := c.Spec["name"].(string); return c.Owner + "/" + s }

func (c container) strings(key string) []string {
	var out []string
	for _, v := range asSlice(c.Spec[key]) {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// port resolves a port reference (name or number) of the container.
func (c container) port(ref any) (int, bool) {
	for _, p := range asSlice(c.Spec["ports"]) {
		num, _ := dig(p, "containerPort").(int)
		switch r := ref.(type) {
		case int:
			if r == num {
				return num, true
			}
		case string:
			if n, _ := dig(p, "name").(string); n == r {
				return num, true
			}
		}
	}
	return 0, false
}

func podTemplate(o object) map[string]any {
	switch o.kind() {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		m, _ := asMap(dig(o, "spec", "template"))
		return m
	case "CronJob":
		m, _ := asMap(dig(o, "spec", "jobTemplate", "spec", "template"))
		return m
	}
	return nil
}

func containers(objs []object) []container {
	var out []container
	for _, o := range objs {
		pt := podTemplate(o)
		if pt == nil {
			continue
		}
		for _, key := range []string{"initContainers", "containers"} {
			for _, c := range asSlice(dig(pt, "spec", key)) {
				m, _ := asMap(c)
				out = append(out, container{Owner: o.kind() + "/" + o.name(), Pod: pt, Spec: m})
			}
		}
	}
	return out
}

func isSwitchyardImage(image string) bool {
	base := image[strings.LastIndex(image, "/")+1:]
	base, _, _ = strings.Cut(base, ":")
	base, _, _ = strings.Cut(base, "@")
	return base == "switchyard"
}

// invocation is a switchyard command line from a manifest.
type invocation struct {
	C     container
	Cmd   string
	Flags map[string]string // name -> value ("true" for a bare bool flag)
}

var reVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// invocations checks every switchyard command line in objs against the
// binary's own flags and returns them.
func invocations(t *testing.T, objs []object) []invocation {
	t.Helper()
	known := subcommands(t)
	var out []invocation
	for _, c := range containers(objs) {
		image, _ := c.Spec["image"].(string)
		if !isSwitchyardImage(image) {
			continue
		}
		command, args := c.strings("command"), c.strings("args")
		if len(command) > 0 {
			if filepath.Base(command[0]) != "switchyard" {
				continue // e.g. cp in an init container
			}
			args = append(command[1:], args...)
		}
		if len(args) == 0 {
			t.Errorf("%s: switchyard without a command", c.name())
			continue
		}
		inv := invocation{C: c, Cmd: args[0], Flags: map[string]string{}}
		if !contains(known, inv.Cmd) {
			t.Errorf("%s: switchyard has no command %q (commands: %v)", c.name(), inv.Cmd, known)
			continue
		}
		flags := commandFlags(t, inv.Cmd)
		env := map[string]bool{}
		for _, e := range asSlice(c.Spec["env"]) {
			n, _ := dig(e, "name").(string)
			env[n] = true
		}
		rest := args[1:]
		for i := 0; i < len(rest); i++ {
			a := rest[i]
			if !strings.HasPrefix(a, "-") {
				t.Errorf("%s: switchyard %s: unexpected argument %q (the commands take flags only)", c.name(), inv.Cmd, a)
				continue
			}
			name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			fi, ok := flags[name]
			if !ok {
				t.Errorf("%s: switchyard %s has no flag --%s (flags: %v)", c.name(), inv.Cmd, name, sortedKeys(flags))
				continue
			}
			if !hasValue {
				if fi.Bool {
					value = "true"
				} else if i+1 < len(rest) {
					i++
					value = rest[i]
				} else {
					t.Errorf("%s: --%s needs a value", c.name(), name)
				}
			}
			for _, m := range reVarRef.FindAllStringSubmatch(value, -1) {
				if !env[m[1]] {
					t.Errorf("%s: --%s uses $(%s), which the container's env does not define", c.name(), name, m[1])
				}
			}
			inv.Flags[name] = value
		}
		out = append(out, inv)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// services indexes Services by namespace/name.
func services(objs []object) map[string]object {
	out := map[string]object{}
	for _, o := range objs {
		if o.kind() == "Service" {
			out[o.namespace()+"/"+o.name()] = o
		}
	}
	return out
}

// serviceTarget resolves host:port (a cluster DNS name of a Service) to
// the Service and the containers behind that port.
func serviceTarget(t *testing.T, objs []object, addr string) (svc object, backends []struct {
	C    container
	Port int
}, err error) {
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	port, _ := strconv.Atoi(portS)
	parts := strings.Split(host, ".")
	if len(parts) < 2 {
		return nil, nil, fmt.Errorf("%s: want <service>.<namespace>[.svc.cluster.local]", addr)
	}
	svc, ok := services(objs)[parts[1]+"/"+parts[0]]
	if !ok {
		return nil, nil, fmt.Errorf("%s: no Service %s in namespace %s", addr, parts[0], parts[1])
	}
	var target any
	for _, p := range asSlice(dig(svc, "spec", "ports")) {
		if n, _ := dig(p, "port").(int); n == port {
			target = dig(p, "targetPort")
			if target == nil {
				target = port
			}
		}
	}
	if target == nil {
		return nil, nil, fmt.Errorf("%s: Service %s has no port %d", addr, parts[0], port)
	}
	sel, _ := asMap(dig(svc, "spec", "selector"))
	for _, c := range containers(objs) {
		if !selects(sel, c.Pod) {
			continue
		}
		if p, ok := c.port(target); ok {
			backends = append(backends, struct {
				C    container
				Port int
			}{c, p})
		}
	}
	if len(backends) == 0 {
		return nil, nil, fmt.Errorf("%s: no container behind Service %s port %d (targetPort %v)", addr, parts[0], port, target)
	}
	return svc, backends, nil
}

func selects(sel map[string]any, pod map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	labels, _ := asMap(dig(pod, "metadata", "labels"))
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func renders(t *testing.T) map[string][]object {
	return map[string][]object{
		"k8s/base":             renderDir(t, "k8s/base"),
		"k8s/overlays/example": renderDir(t, "k8s/overlays/example"),
		"envoy":                renderDir(t, "envoy"),
	}
}

// TestManifestsMatchTheBinary: every switchyard command line names a real
// command and real flags; listen addresses on non-loopback hosts are
// declared container ports; the proxies' --xds reaches the control plane's
// xDS listener through its Service; the edge Envoy listens where the
// control plane tells it to.
func TestManifestsMatchTheBinary(t *testing.T) {
	for dir, objs := range renders(t) {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			invs := invocations(t, objs)
			byCmd := map[string]int{}
			for _, inv := range invs {
				byCmd[inv.Cmd]++
				flags := commandFlags(t, inv.Cmd)
				for name, value := range inv.Flags {
					if !flags[name].Listen || value == "" {
						continue
					}
					host, portS, err := net.SplitHostPort(value)
					if err != nil {
						t.Errorf("%s: --%s=%s: %v", inv.C.name(), name, value, err)
						continue
					}
					port, _ := strconv.Atoi(portS)
					if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
						continue // reachable only inside the pod
					}
					if _, ok := inv.C.port(port); !ok {
						t.Errorf("%s: --%s listens on %d, which is not a containerPort", inv.C.name(), name, port)
					}
				}
				if inv.Cmd == "proxy" {
					_, backs, err := serviceTarget(t, objs, inv.Flags["xds"])
					if err != nil {
						t.Errorf("%s: --xds: %v", inv.C.name(), err)
						continue
					}
					for _, b := range backs {
						if !listensOn(t, objs, b.C, "xds", b.Port) {
							t.Errorf("%s: --xds=%s reaches %s port %d, which is not its --xds listener", inv.C.name(), inv.Flags["xds"], b.C.name(), b.Port)
						}
					}
				}
			}
			if dir != "envoy" {
				want := []string{"controlplane", "backend", "proxy"}
				if dir == "k8s/base" {
					want = append(want, "demo-models")
				}
				for _, cmd := range want {
					if byCmd[cmd] == 0 {
						t.Errorf("no container runs switchyard %s", cmd)
					}
				}
			}
		})
	}
	// The edge Envoy listens on the port the control plane puts into its
	// Listener.
	var cpPort int
	for _, inv := range invocations(t, renderDir(t, "k8s/base")) {
		if inv.Cmd == "controlplane" {
			cpPort = xdsconv.DefaultListenerPort
			if v, ok := inv.Flags["envoy-listener-port"]; ok {
				cpPort, _ = strconv.Atoi(v)
			}
		}
	}
	found := false
	for _, c := range containers(renderDir(t, "envoy")) {
		if _, ok := c.port(cpPort); ok {
			found = true
		}
	}
	if !found {
		t.Errorf("the edge Envoy declares no containerPort %d (the control plane's --envoy-listener-port)", cpPort)
	}
}

// listensOn reports whether the switchyard container c listens with flag
// on port.
func listensOn(t *testing.T, objs []object, c container, flag string, port int) bool {
	for _, inv := range invocations(t, objs) {
		if inv.C.name() != c.name() {
			continue
		}
		_, p, err := net.SplitHostPort(inv.Flags[flag])
		return err == nil && p == strconv.Itoa(port)
	}
	return false
}

// TestServicesAndProbes: every Service selects pods and its target ports
// exist on them; every probe targets a declared port and, for switchyard
// containers, a path that listener serves; PDBs, HPAs and ScaledObjects
// point at workloads that exist.
func TestServicesAndProbes(t *testing.T) {
	for dir, objs := range renders(t) {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			workloads := map[string]object{}
			for _, o := range objs {
				if podTemplate(o) != nil {
					workloads[o.kind()+"/"+o.name()] = o
				}
			}
			for _, o := range objs {
				switch o.kind() {
				case "Service":
					sel, _ := asMap(dig(o, "spec", "selector"))
					for _, p := range asSlice(dig(o, "spec", "ports")) {
						target := dig(p, "targetPort")
						if target == nil {
							target = dig(p, "port")
						}
						ok := false
						for _, c := range containers(objs) {
							if selects(sel, c.Pod) {
								if _, has := c.port(target); has {
									ok = true
								}
							}
						}
						if !ok {
							t.Errorf("Service %s: no selected container has port %v", o.name(), target)
						}
					}
				case "PodDisruptionBudget":
					sel, _ := asMap(dig(o, "spec", "selector", "matchLabels"))
					ok := false
					for _, w := range workloads {
						if selects(sel, podTemplate(w)) {
							ok = true
						}
					}
					if !ok {
						t.Errorf("PodDisruptionBudget %s selects no pods", o.name())
					}
				case "HorizontalPodAutoscaler", "ScaledObject":
					ref := dig(o, "spec", "scaleTargetRef")
					kind, _ := dig(ref, "kind").(string)
					if kind == "" {
						kind = "Deployment"
					}
					name, _ := dig(ref, "name").(string)
					if _, ok := workloads[kind+"/"+name]; !ok {
						t.Errorf("%s %s scales %s/%s, which does not exist", o.kind(), o.name(), kind, name)
					}
				}
			}
			for _, c := range containers(objs) {
				for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
					p := c.Spec[probe]
					if p == nil {
						continue
					}
					port := dig(p, "httpGet", "port")
					if port == nil {
						port = dig(p, "tcpSocket", "port")
					}
					if _, ok := c.port(port); !ok {
						t.Errorf("%s: %s targets port %v, which the container does not declare", c.name(), probe, port)
					}
				}
			}
			for _, inv := range invocations(t, objs) {
				for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
					p := inv.C.Spec[probe]
					if p == nil {
						continue
					}
					path, _ := dig(p, "httpGet", "path").(string)
					port, _ := inv.C.port(dig(p, "httpGet", "port"))
					if err := servedPath(t, inv, port, path); err != nil {
						t.Errorf("%s: %s: %v", inv.C.name(), probe, err)
					}
				}
				if inv.C.Spec["resources"] == nil {
					t.Errorf("%s: no resource requests/limits", inv.C.name())
				}
			}
		})
	}
}

// servedPath checks that the listener of inv on port serves GET path,
// reading the code that serves it.
func servedPath(t *testing.T, inv invocation, port int, path string) error {
	flagOn := ""
	for name, v := range inv.Flags {
		if _, p, err := net.SplitHostPort(v); err == nil && p == strconv.Itoa(port) && commandFlags(t, inv.Cmd)[name].Listen {
			flagOn = name
		}
	}
	switch {
	case inv.Cmd == "backend" && flagOn == "http":
		switch k := oip.ParseHTTPPath(path).Kind; k {
		case oip.RouteHealthLive, oip.RouteHealthReady:
			return nil
		default:
			return fmt.Errorf("backend REST port: %s is not an OIP v2 health endpoint", path)
		}
	case inv.Cmd == "controlplane" && flagOn == "api":
		return grepSource(t, "controlplane/rest", `"GET `+path+`"`) // the REST API's routes
	case inv.Cmd == "proxy" && flagOn == "admin":
		return grepSource(t, "proxy", `"GET `+path+`"`)
	}
	return fmt.Errorf("probe %s on port %d: not a switchyard HTTP listener with known endpoints (flag %q)", path, port, flagOn)
}

func grepSource(t *testing.T, pkg, needle string) error {
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), pkg, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(needle)) {
			return nil
		}
	}
	return fmt.Errorf("%s/ does not register %s", pkg, needle)
}

// TestTokensSecretLoads: the example tokens Secret is a tokens file the
// control plane accepts (--tokens), and the control plane mounts it where
// its --tokens flag points.
func TestTokensSecretLoads(t *testing.T) {
	objs := renderDir(t, "k8s/base")
	var secret object
	for _, o := range objs {
		if o.kind() == "Secret" && o.name() == "switchyard-tokens" {
			secret = o
		}
	}
	if secret == nil {
		t.Fatal("no Secret switchyard-tokens")
	}
	for _, inv := range invocations(t, objs) {
		if inv.Cmd != "controlplane" {
			continue
		}
		tokens := inv.Flags["tokens"]
		if tokens == "" {
			t.Fatal("the control plane runs without --tokens")
		}
		if _, insecure := inv.Flags["insecure-loopback-no-auth"]; insecure {
			t.Error("the control plane runs with --insecure-loopback-no-auth")
		}
		file := filepath.Base(tokens)
		content, _ := dig(secret, "stringData", file).(string)
		if content == "" {
			t.Fatalf("Secret switchyard-tokens has no stringData %q (the file --tokens=%s names)", file, tokens)
		}
		mounted := false
		for _, m := range asSlice(inv.C.Spec["volumeMounts"]) {
			mp, _ := dig(m, "mountPath").(string)
			if filepath.Join(mp, file) == tokens {
				vol, _ := dig(m, "name").(string)
				for _, v := range asSlice(dig(inv.C.Pod, "spec", "volumes")) {
					if dig(v, "name") == vol && dig(v, "secret", "secretName") == "switchyard-tokens" {
						mounted = true
					}
				}
			}
		}
		if !mounted {
			t.Errorf("--tokens=%s is not a mount of Secret switchyard-tokens", tokens)
		}
		f := filepath.Join(t.TempDir(), file)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.LoadTokens(f); err != nil {
			t.Errorf("the control plane rejects the example tokens: %v", err)
		}
	}
}

// TestModelDocumentMatchesManifests: deploy/models/recommender.yaml passes
// the control plane's own validation, and every version's endpoint is a
// Service port in front of a backend listening with the version's protocol.
func TestModelDocumentMatchesManifests(t *testing.T) {
	b, err := os.ReadFile("models/recommender.yaml")
	if err != nil {
		t.Fatal(err)
	}
	models, err := api.DecodeYAMLAll(b)
	if err != nil {
		t.Fatal(err)
	}
	objs := renderDir(t, "k8s/base")
	for _, m := range models {
		if err := api.Normalize(&m); err != nil {
			t.Fatalf("model %s: %v", m.Metadata.Name, err)
		}
		for _, v := range m.Spec.Versions {
			want := "http"
			if v.Protocol == "grpc" {
				want = "grpc"
			}
			for _, ep := range v.Endpoints {
				_, backs, err := serviceTarget(t, objs, ep)
				if err != nil {
					t.Errorf("version %s: %v", v.Name, err)
					continue
				}
				for _, bk := range backs {
					if !listensOn(t, objs, bk.C, want, bk.Port) {
						t.Errorf("version %s (%s): %s reaches %s port %d, which is not its --%s listener", v.Name, v.Protocol, ep, bk.C.name(), bk.Port, want)
					}
					if !strings.Contains(bk.C.Owner, v.BackendModel) {
						t.Errorf("version %s: endpoint %s reaches %s, not a Deployment of backend model %s", v.Name, ep, bk.C.Owner, v.BackendModel)
					}
				}
			}
		}
	}
}

// TestEnvoyBootstrap: the edge Envoy bootstrap is a valid Envoy v3
// Bootstrap (protojson, unknown fields rejected, then the generated
// ValidateAll), uses ADS for LDS and CDS, and reaches the control plane's
// xDS Service port.
func TestEnvoyBootstrap(t *testing.T) {
	b, err := os.ReadFile("envoy/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("not an Envoy v3 Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("invalid bootstrap: %v", err)
	}
	dr := bs.GetDynamicResources()
	if dr.GetLdsConfig().GetAds() == nil || dr.GetCdsConfig().GetAds() == nil {
		t.Error("LDS and CDS must come over ADS")
	}
	xdsCluster := dr.GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	var addr string
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == xdsCluster {
			sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			addr = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
			if c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] == nil {
				t.Error("the xDS cluster must speak HTTP/2")
			}
		}
	}
	if addr == "" {
		t.Fatalf("no static cluster %q for ADS", xdsCluster)
	}
	objs := renderDir(t, "k8s/base")
	_, backs, err := serviceTarget(t, objs, addr)
	if err != nil {
		t.Fatalf("ADS cluster: %v", err)
	}
	for _, bk := range backs {
		if !listensOn(t, objs, bk.C, "xds", bk.Port) {
			t.Errorf("ADS cluster %s reaches %s port %d, not the control plane's --xds", addr, bk.C.name(), bk.Port)
		}
	}
	// The node id is unique per pod in the Deployment.
	for _, c := range containers(renderDir(t, "envoy")) {
		args := strings.Join(c.strings("args"), " ")
		if !strings.Contains(args, "--service-node $(POD_NAME)") {
			t.Errorf("%s: want --service-node $(POD_NAME) so each Envoy has its own node id, args %q", c.name(), args)
		}
	}
}

// TestPrometheusRuleInSync: the Prometheus Operator's PrometheusRule holds
// exactly the groups of prometheus/rules/*.yaml.
func TestPrometheusRuleInSync(t *testing.T) {
	var groups []any
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []any `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatal(err)
		}
		groups = append(groups, rf.Groups...)
	}
	want := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name":      "switchyard",
			"namespace": "switchyard",
			"labels":    map[string]any{"app.kubernetes.io/name": "switchyard", "role": "alert-rules"},
		},
		"spec": map[string]any{"groups": groups},
	}
	const path = "k8s/components/prometheus-operator/prometheusrule.yaml"
	if *update {
		var buf bytes.Buffer
		buf.WriteString("# GENERATED from deploy/prometheus/rules/*.yaml by\n#   go test ./deploy -run TestPrometheusRuleInSync -update\n# Edit the rule files, not this one.\n")
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with -update)", err)
	}
	var got any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var wantRT any
	wb, _ := yaml.Marshal(want)
	if err := yaml.Unmarshal(wb, &wantRT); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantRT) {
		t.Errorf("%s differs from prometheus/rules; run: go test ./deploy -run TestPrometheusRuleInSync -update", path)
	}
}

// TestProxiesAuthenticateToXDS: the control plane takes tokens, so xDS and
// the stats stream do too (docs/security.md): every proxy presents a token
// (--control-plane-token-file) mounted from a Secret key whose value is a
// token of the tokens file, and that token's subject admits the pods'
// node ids (--node-id=$(POD_NAME): the Deployment's name and a suffix).
// The edge Envoy's bootstrap sends a token of the file the same way.
func TestProxiesAuthenticateToXDS(t *testing.T) {
	objs := renderDir(t, "k8s/base")
	secrets := map[string]object{}
	for _, o := range objs {
		if o.kind() == "Secret" {
			secrets[o.name()] = o
		}
	}
	content, _ := dig(secrets["switchyard-tokens"], "stringData", "tokens.yaml").(string)
	var tf auth.TokensFile
	if err := yaml.Unmarshal([]byte(content), &tf); err != nil || len(tf.Tokens) == 0 {
		t.Fatalf("tokens file: %v", err)
	}
	subjectOf := map[string]string{}
	for _, tk := range tf.Tokens {
		subjectOf[tk.Token] = tk.Subject
	}
	admits := func(subject, node string) bool {
		if p, ok := strings.CutSuffix(subject, "*"); ok {
			return p != "" && strings.HasPrefix(node, p)
		}
		return subject == node
	}
	proxies := 0
	for _, inv := range invocations(t, objs) {
		if inv.Cmd != "proxy" {
			continue
		}
		proxies++
		file := inv.Flags["control-plane-token-file"]
		if file == "" {
			t.Errorf("%s: no --control-plane-token-file: the control plane refuses its xDS and stats streams", inv.C.name())
			continue
		}
		var token string
		for _, m := range asSlice(inv.C.Spec["volumeMounts"]) {
			mp, _ := dig(m, "mountPath").(string)
			if filepath.Dir(file) != mp {
				continue
			}
			vol, _ := dig(m, "name").(string)
			for _, v := range asSlice(dig(inv.C.Pod, "spec", "volumes")) {
				if dig(v, "name") != vol {
					continue
				}
				sec, _ := dig(v, "secret", "secretName").(string)
				for _, it := range asSlice(dig(v, "secret", "items")) {
					if dig(it, "path") == filepath.Base(file) {
						key, _ := dig(it, "key").(string)
						token, _ = dig(secrets[sec], "stringData", key).(string)
					}
				}
			}
		}
		subject, ok := subjectOf[token]
		if !ok {
			t.Errorf("%s: --control-plane-token-file=%s is not a mounted Secret key holding a token of the tokens file", inv.C.name(), file)
			continue
		}
		_, owner, _ := strings.Cut(inv.C.Owner, "/")
		if inv.Flags["node-id"] != "$(POD_NAME)" || !admits(subject, owner+"-abc12-xyz34") {
			t.Errorf("%s: token subject %q does not admit its pods' node ids (%s-...)", inv.C.name(), subject, owner)
		}
	}
	if proxies == 0 {
		t.Fatal("no proxy in the base")
	}
	b, err := os.ReadFile("envoy/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	auth := regexp.MustCompile(`key: authorization, value: "Bearer ([^"]+)"`).FindSubmatch(b)
	if auth == nil {
		t.Fatal("the edge Envoy's bootstrap sends no authorization metadata on ADS")
	}
	if s, ok := subjectOf[string(auth[1])]; !ok || !admits(s, "switchyard-edge-envoy-abc12-xyz34") {
		t.Errorf("the edge Envoy's token (subject %q) does not admit its pods' node ids", s)
	}
}
