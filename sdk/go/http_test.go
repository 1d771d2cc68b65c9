package grayscope

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A request passes through an entry service and a second service, both with the middleware, the
// entry calling on through Transport: the stage reaches the second service by header and baggage,
// and the default is applied at the entry only.
func TestMiddlewareAndTransportCarryTheStage(t *testing.T) {
	var seen http.Header
	var innerStage string
	inner := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		innerStage = Stage(r.Context())
	})))
	defer inner.Close()
	client := &http.Client{Transport: NewTransport(nil)}
	entry := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, inner.URL, nil)
		res, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		res.Body.Close()
	}), Entry("stable")))
	defer entry.Close()

	for _, c := range []struct {
		header, want string
	}{{"", "stable"}, {"canary", "canary"}} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, entry.URL, nil)
		if c.header != "" {
			req.Header.Set(StageHeader, c.header)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
		if innerStage != c.want || seen.Get(StageHeader) != c.want || seen.Get("baggage") != "x-release-stage="+c.want {
			t.Fatalf("sent %q: inner saw stage %q, header %q, baggage %q", c.header, innerStage, seen.Get(StageHeader), seen.Get("baggage"))
		}
	}

	// The second service is no entry: an untagged request stays untagged there.
	res, err := http.Get(inner.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if innerStage != "" {
		t.Fatalf("a non-entry service applied a default: %q", innerStage)
	}
}

func TestTransportLeavesTheCallersRequestAlone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(WithStage(context.Background(), "canary"), http.MethodGet, srv.URL, nil)
	res, err := (&http.Client{Transport: NewTransport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(req.Header) != 0 {
		t.Fatalf("the request was modified: %v", req.Header)
	}
}
