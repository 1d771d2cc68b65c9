package mesh

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The mesh's two gRPC services, each with one method that takes and returns a string, described
// by hand so that the example needs no generated code.

const (
	placeMethod = "/grayscope.example.Orders/Place"
	payMethod   = "/grayscope.example.Payments/Pay"
)

type handler func(ctx context.Context, in string) (string, error)

func serviceDesc(service, method string, h handler) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: method,
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				call := func(ctx context.Context, req any) (any, error) {
					out, err := h(ctx, req.(*wrapperspb.StringValue).GetValue())
					if err != nil {
						return nil, err
					}
					return wrapperspb.String(out), nil
				}
				if icpt == nil {
					return call(ctx, in)
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/" + service + "/" + method}, call)
			},
		}},
	}
}

func invoke(ctx context.Context, cc *grpc.ClientConn, method, in string) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, method, wrapperspb.String(in), out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
