// Package registration serves kubelet's plugin-registration API (pluginregistration/v1) from a
// socket in kubelet's plugin registry directory, so that a node needs no
// node-driver-registrar sidecar: kubelet's plugin watcher finds the socket, asks GetInfo for
// the driver's name and CSI endpoint, and reports the outcome with NotifyRegistrationStatus.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// supportedVersions are the CSI versions announced to kubelet.
var supportedVersions = []string{"1.0.0"}

// Server answers kubelet's plugin watcher.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	// DriverName is the CSI driver name.
	DriverName string
	// Endpoint is the CSI socket path as kubelet sees it.
	Endpoint string
}

// GetInfo tells kubelet what this plugin is and where its CSI socket is.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.DriverName,
		Endpoint:          s.Endpoint,
		SupportedVersions: supportedVersions,
	}, nil
}

// NotifyRegistrationStatus logs kubelet's verdict; a refusal is an error a person must see.
func (s *Server) NotifyRegistrationStatus(ctx context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		klog.FromContext(ctx).Info("Registered with kubelet", "driver", s.DriverName, "endpoint", s.Endpoint)
	} else {
		klog.FromContext(ctx).Error(errors.New(st.GetError()), "kubelet refused the plugin registration", "driver", s.DriverName)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// SocketPath is where the registration socket of a driver lives in kubelet's registry dir.
func SocketPath(dir, driverName string) string {
	return filepath.Join(dir, driverName+"-reg.sock")
}

// Serve serves the registration API until ctx is done, then removes the socket so kubelet
// deregisters the plugin.
func Serve(ctx context.Context, dir string, s *Server) error {
	path := SocketPath(dir, s.DriverName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale registration socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("registration socket %s: %w", path, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, s)
	go func() {
		<-ctx.Done()
		srv.Stop()
		_ = os.Remove(path)
	}()
	klog.FromContext(ctx).Info("Serving kubelet plugin registration", "socket", path, "endpoint", s.Endpoint)
	return srv.Serve(lis)
}
