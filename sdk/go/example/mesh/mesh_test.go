package mesh

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	grayscope "github.com/grayscope/grayscope/sdk/go"
	"github.com/grayscope/grayscope/sdk/go/internal/etcdtest"
)

// collector is a grayscope binary serving on ports the OS chose.
type collector struct {
	bin, grpc, api string
}

// grayscopeBin is the collector binary: $GRAYSCOPE_BIN, or the workspace's newest build.
func grayscopeBin(t *testing.T) string {
	if b := os.Getenv("GRAYSCOPE_BIN"); b != "" {
		return b
	}
	best, newest := "", time.Time{}
	for _, p := range []string{"../../../../target/release/grayscope", "../../../../target/debug/grayscope"} {
		abs, _ := filepath.Abs(p)
		if st, err := os.Stat(abs); err == nil && st.ModTime().After(newest) {
			best, newest = abs, st.ModTime()
		}
	}
	if best != "" {
		return best
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no grayscope binary: build it (cargo build) or set GRAYSCOPE_BIN")
	}
	t.Skip("no grayscope binary: build it (cargo build) or set GRAYSCOPE_BIN")
	return ""
}

func startCollector(t *testing.T) collector {
	t.Helper()
	bin := grayscopeBin(t)
	cmd := exec.Command(bin, "serve", "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0",
		"--http", "127.0.0.1:0", "--log", "warn", "--trace-idle", "1s", "--data", t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("grayscope said nothing: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	grpc := regexp.MustCompile(`OTLP/gRPC on ([^,]+),`).FindStringSubmatch(line)
	api := regexp.MustCompile(`metrics on (https?://\S+)`).FindStringSubmatch(line)
	if grpc == nil || api == nil {
		t.Fatalf("unexpected first line: %q", line)
	}
	return collector{bin: bin, grpc: grpc[1], api: api[1]}
}

func (c collector) get(t *testing.T, path string, v any) {
	t.Helper()
	res, err := http.Get(c.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// settle waits until every span the collector received is judged and stored.
func (c collector) settle(t *testing.T) {
	t.Helper()
	time.Sleep(1500 * time.Millisecond) // --trace-idle
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		res, err := http.Get(c.api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		left := 0.0
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "grayscope_buffered_spans") || strings.HasPrefix(l, "grayscope_store_queued_spans") {
				var v float64
				fmt.Sscan(l[strings.LastIndex(l, " ")+1:], &v)
				left += v
			}
		}
		if left == 0 {
			return
		}
	}
	t.Fatal("the collector did not settle")
}

type finding struct {
	Kind       string `json:"kind"`
	Scope      string `json:"scope"`
	FirstBreak bool   `json:"first_break"`
	Edge       struct {
		Caller *string `json:"caller"`
		Callee string  `json:"callee"`
	} `json:"edge"`
}

func (f finding) String() string {
	caller := "(root)"
	if f.Edge.Caller != nil {
		caller = *f.Edge.Caller
	}
	return fmt.Sprintf("%s %s %s->%s", f.Kind, f.Scope, caller, f.Edge.Callee)
}

// run sends requests of both stages through the mesh with fault and returns the collector's first
// breaks, each once.
func run(t *testing.T, fault Fault) (collector, map[string]int) {
	c := startCollector(t)
	m, err := Start(context.Background(), Config{OTLP: c.grpc, Etcd: etcdtest.Start(t), Fault: fault})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodGet, m.GatewayURL+"/checkout", nil)
		// Ten canary requests in a row, then ten untagged (stable at the gateway): a balancer that
		// ignores the stage alternates consecutive canary requests between the instances, where
		// alternating stages could line up with it by chance.
		if i < 10 {
			req.Header.Set(grayscope.StageHeader, "canary")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, res.StatusCode)
		}
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.settle(t)
	var page struct {
		Findings []finding `json:"findings"`
	}
	c.get(t, "/api/v1/findings?limit=1000", &page)
	breaks := map[string]int{}
	for _, f := range page.Findings {
		if f.FirstBreak {
			breaks[f.String()]++
		}
	}
	return c, breaks
}

func TestTheCleanMeshHasNoFindings(t *testing.T) {
	c, breaks := run(t, None)
	if len(breaks) != 0 {
		t.Fatalf("findings on the clean mesh: %v", breaks)
	}
	var graph struct {
		Edges []struct {
			Caller string `json:"caller"`
			Callee string `json:"callee"`
		} `json:"edges"`
	}
	c.get(t, "/api/v1/graph", &graph)
	got := map[string]bool{}
	for _, e := range graph.Edges {
		got[e.Caller+"->"+e.Callee] = true
	}
	for _, want := range []string{"gateway->users", "users->orders", "orders->payments"} {
		if !got[want] {
			t.Errorf("no %s calls in the graph: %v", want, got)
		}
	}
}

// Each fault gives one kind of first break, on its hop, once per request it broke (of 10 canary
// and 10 stable requests).
func TestEachFaultIsFoundOnItsHop(t *testing.T) {
	for fault, want := range map[Fault]struct {
		finding string
		n       int // requests broken; 0: some of them (round-robin ignores the stage)
	}{
		MissingForward: {"missing cross_service orders->payments", 20},
		Overwrite:      {"changed in_process users->orders", 10}, // stable stays stable
		MisspeltKey:    {"key_mismatch in_process users->orders", 20},
		IgnoreStage:    {"misrouted cross_service users->orders", 0},
		Goroutine:      {"broken_trace in_process orders->payments", 20},
	} {
		t.Run(string(fault), func(t *testing.T) {
			_, breaks := run(t, fault)
			n := breaks[want.finding]
			if len(breaks) != 1 || n == 0 || (want.n > 0 && n != want.n) || (want.n == 0 && n > 20) {
				t.Fatalf("first breaks %v, want only %q (%d)", breaks, want.finding, want.n)
			}
		})
	}
}

// A stale resolver cache sends no canary request to the canary orders instance. grayscope cannot
// call that misrouted (the canary never served anything, so it is not live in its view), but the
// probe's instance-stage expectation catches it; on the clean mesh the same probe passes.
func TestTheProbeCatchesAStaleResolverCache(t *testing.T) {
	for _, c := range []struct {
		fault Fault
		exit  int
	}{{None, 0}, {StaleCache, 1}} {
		t.Run(string(c.fault)+"-", func(t *testing.T) {
			col := startCollector(t)
			m, err := Start(context.Background(), Config{OTLP: col.grpc, Etcd: etcdtest.Start(t), Fault: c.fault})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Shutdown(context.Background())
			probe := exec.Command(col.bin, "probe", "--url", m.GatewayURL+"/checkout",
				"--collector", col.api, "--otlp-endpoint", "http://"+col.grpc,
				"--stage", "canary", "--requests", "5", "--expect-instance-stage", "orders=canary",
				"--timeout", "60s")
			out, _ := probe.CombinedOutput()
			if probe.ProcessState.ExitCode() != c.exit {
				t.Fatalf("probe exited %d, want %d:\n%s", probe.ProcessState.ExitCode(), c.exit, out)
			}
			if os.Getenv("MESH_VERBOSE") != "" {
				t.Logf("%s", out)
			}
			if c.exit == 1 && !strings.Contains(string(out), "orders=canary") {
				t.Fatalf("the probe's report does not name orders:\n%s", out)
			}
		})
	}
}
