// Package identity is the CSI Identity service: who the plugin is and whether it is ready.
package identity

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Server implements the CSI Identity service.
type Server struct {
	csi.UnimplementedIdentityServer

	Name    string
	Version string
	// Ready reports whether the plugin can serve publishes (its informer caches have synced).
	Ready func() bool
}

// GetPluginInfo returns the driver name and version.
func (s *Server) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.Name, VendorVersion: s.Version}, nil
}

// GetPluginCapabilities returns none: this is a node-only plugin without a controller service.
func (s *Server) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

// Probe reports readiness: false until the informer caches have synced.
func (s *Server) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(s.Ready())}, nil
}
