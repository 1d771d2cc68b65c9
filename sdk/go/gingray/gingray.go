// Package gingray is grayscope's stage middleware for gin, in a package of its own so that
// services without gin do not depend on it.
//
//	r := gin.New()
//	r.Use(otelgin.Middleware("gateway"), gingray.Middleware(grayscope.Entry("stable")))
package gingray

import (
	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/propagation"

	grayscope "github.com/grayscope/grayscope/sdk/go"
)

// Middleware puts the request's trace context and stage into the request's context, as
// grayscope.Middleware does for net/http; handlers read it with grayscope.Stage(c.Request.Context()).
func Middleware(opts ...grayscope.Option) gin.HandlerFunc {
	def := grayscope.DefaultStage(opts...)
	return func(c *gin.Context) {
		ctx := grayscope.Extract(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header), def)
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
}
