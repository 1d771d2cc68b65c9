package gingray

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	grayscope "github.com/grayscope/grayscope/sdk/go"
)

func TestGinHandlersSeeTheStage(t *testing.T) {
	gin.SetMode(gin.TestMode)
	r := gin.New()
	var seen string
	r.Use(Middleware(grayscope.Entry("stable")))
	r.GET("/", func(c *gin.Context) { seen = grayscope.Stage(c.Request.Context()) })
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, c := range []struct{ header, baggage, want string }{
		{"", "", "stable"},
		{"canary", "", "canary"},
		{"", "x-release-stage=canary", "canary"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if c.header != "" {
			req.Header.Set(grayscope.StageHeader, c.header)
		}
		if c.baggage != "" {
			req.Header.Set("baggage", c.baggage)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if seen != c.want {
			t.Fatalf("header %q baggage %q: handler saw %q, want %q", c.header, c.baggage, seen, c.want)
		}
	}
}
