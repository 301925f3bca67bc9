// Package node is the CSI Node service: NodePublishVolume renders a Pod's Connector files into
// a tmpfs at the target path, NodeUnpublishVolume removes them. Every side effect (API reads,
// authorization, mounts, records, events) sits behind a field, so tests need no root.
package node

import (
	"context"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/render"
)

// Authorizer decides whether a Pod may use a Connector.
type Authorizer interface {
	// AuthorizeConnector returns nil when allowed, a *Denied when not, and any other error when
	// the decision could not be made.
	AuthorizeConnector(ctx context.Context, pod records.Pod, namespace, name string) error
}

// Admission is the approval flow's answer for one Connector of a volume.
type Admission struct {
	// Granted: the Pod may use the Connector.
	Granted bool
	// AccessRequest is the request that decided or is pending ("namespace/name"), if any.
	AccessRequest string
	// Rejected: a check rejected the request; the volume holds only .error.json.
	Rejected bool
	// Failed: the request's checks cannot be evaluated (a broken policy); access is never granted.
	Failed bool
	// Revoked: the Pod's request was revoked, for good (its Connector deleted and made again);
	// a mounted volume keeps its content, as in an outage, and the Pod is told once.
	Revoked bool
	// Message says what the request waits for, or what decided it.
	Message string
}

// Approver is the approval flow (SPEC §6.3–6.5); nil when the driver runs without it.
type Approver interface {
	// Admit returns the admission, a *Denied, or an error when it cannot decide now.
	Admit(ctx context.Context, pod records.Pod, c *v1alpha1.Connector) (*Admission, error)
	// Revoke ends the grants of the given AccessRequests ("namespace/name").
	Revoke(ctx context.Context, accessRequests []string) error
	// RevokePod ends the grants of every AccessRequest this node made for the Pod of uid: with
	// recordLost, of every one the API server has (a list); otherwise of those it watches.
	RevokePod(ctx context.Context, uid string, recordLost bool) error
	// Hold keeps the node watching the given AccessRequests ("namespace/name"), which a
	// volume's record names, until it revokes them.
	Hold(accessRequests []string)
}

// CASource returns the proxy CA certificate (PEM) that volumes carry.
type CASource interface {
	CACert(ctx context.Context) (string, error)
}

// Config holds the settings of the Node service.
type Config struct {
	NodeID string
	// Audience is the audience of the projected token the driver expects.
	Audience string
	// VolumeSizeLimit is the size of each volume's tmpfs in bytes.
	VolumeSizeLimit int64
	// RepublishRecheck is how long an authorization holds for a republish whose inputs did not
	// change: within it such a republish sends no API request (0: every republish authorizes).
	RepublishRecheck time.Duration
	// VolumesMaxBytes bounds the memory the node's new volumes take it to, a namespace's to
	// half of it (volumeBudget; 0: no bound).
	VolumesMaxBytes int64
}

// Server implements the CSI Node service.
type Server struct {
	csi.UnimplementedNodeServer

	Config  Config
	Objects client.Reader // Connectors and ConnectorClasses, from informer caches
	// Lookups reads the Connectors of a new volume, watching only those that exist (resolve);
	// nil: Objects.
	Lookups client.Reader
	// LiveClasses reads a ConnectorClass from the API server when Objects has not seen it yet
	// (getClass); nil: Objects alone.
	LiveClasses client.Reader
	Authorizer  Authorizer
	Approval    Approver
	Renderer    *render.Renderer
	CA          CASource
	Mounter     mount.Mounter
	Records     *records.Store
	Events      record.EventRecorder
	// Flags are the feature flags in force (enable-multi-connector); nil means the defaults.
	Flags *features.Source
	// Clock replaces time.Now; for tests only.
	Clock func() time.Time

	targets *targetLocks
	// kept holds the volumes whose last republish kept old content, so that an outage is
	// reported to the Pod once, not at every republish.
	kept   *sync.Map // volume ID → whether it was kept for a revoked request (else an outage)
	budget *volumeBudget
}

// NewServer returns a Server; every field of s but Clock must be set. The volumes its records
// name count against Config.VolumesMaxBytes from the start, and their AccessRequests are
// watched.
func NewServer(s Server) *Server {
	s.targets = &targetLocks{}
	s.kept = &sync.Map{}
	mounted := s.mountedRecords()
	s.budget = newVolumeBudget(s.Config.VolumesMaxBytes, mounted)
	if s.Approval != nil {
		for _, rec := range mounted {
			s.Approval.Hold(rec.AccessRequests)
		}
	}
	return &s
}

// mountedRecords are the records of the volumes mounted at start, whose memory the budget
// counts: a record whose target is no longer mounted (a node that rebooted, and whose kubelet
// cleaned up without an unpublish) holds none.
func (s *Server) mountedRecords() []*records.Record {
	if s.Records == nil || s.Mounter == nil { // tests of a single RPC may go without
		return nil
	}
	all, err := s.Records.All()
	if err != nil {
		klog.ErrorS(err, "Reading the volume records at start: the memory of the volumes they name is not counted until their next publish")
	}
	var mounted []*records.Record
	for _, rec := range all {
		if ok, err := s.Mounter.IsMountPoint(rec.TargetPath); err == nil && ok {
			mounted = append(mounted, rec)
		}
	}
	return mounted
}

// NodeGetInfo reports the node ID.
func (s *Server) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.Config.NodeID}, nil
}

// NodeGetCapabilities reports VOLUME_MOUNT_GROUP, so that kubelet hands the Pod's fsGroup to
// the driver instead of changing ownership itself.
func (s *Server) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{
			Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
		}},
	}}}, nil
}
