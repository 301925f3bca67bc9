package node

import (
	"context"
	"errors"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/node/records"
)

// NodeUnpublishVolume unmounts and removes the target and forgets the volume. An absent or
// already unmounted target succeeds, also after a driver restart.
func (s *Server) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	target := req.GetTargetPath()
	defer s.targets.lock(target)()

	if err := s.revoke(ctx, req.GetVolumeId(), target); err != nil {
		return nil, err
	}
	if err := s.Mounter.Unmount(target); err != nil {
		return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
	}
	if err := s.Records.Delete(req.GetVolumeId()); err != nil {
		return nil, status.Errorf(codes.Internal, "delete volume record: %v", err)
	}
	s.budget.release(req.GetVolumeId())
	s.kept.Delete(req.GetVolumeId()) // a volume that went during an outage: nothing to report of it again
	klog.FromContext(ctx).V(2).Info("Unpublished volume", "volumeID", req.GetVolumeId(), "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// revoke ends the grants the volume's AccessRequests hold, before its files go away, so that a
// failure leaves the volume for kubelet to retry.
func (s *Server) revoke(ctx context.Context, volumeID, target string) error {
	if s.Approval == nil {
		return nil
	}
	rec, err := s.Records.Load(volumeID)
	unreadable := errors.Is(err, records.ErrUnreadable)
	switch {
	case err != nil && !unreadable:
		return status.Errorf(codes.Internal, "read volume record: %v", err)
	case unreadable || rec == nil:
		// Lost (a power loss before the record reached the disk) or never written. Failing
		// would fail every retry, and the Pod would never end: what the volume held is found
		// by its Pod, whose UID kubelet's target path names.
		if unreadable {
			klog.FromContext(ctx).Error(err, "Unpublishing a volume whose record cannot be read: revoking its Pod's AccessRequests", "volumeID", volumeID)
		}
		return s.revokePodOf(ctx, target, unreadable || s.mounted(target))
	case len(rec.AccessRequests) == 0:
		return nil
	}
	if err := s.Approval.Revoke(ctx, rec.AccessRequests); err != nil {
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	return nil
}

// mounted tells whether target is mounted; an error to tell says it may be.
func (s *Server) mounted(target string) bool {
	ok, err := s.Mounter.IsMountPoint(target)
	return ok || err != nil
}

// revokePodOf revokes this node's AccessRequests of the Pod whose volume target is: with
// recordLost (the volume was published: its record was lost), all of them the API server has;
// otherwise (a volume never published, whose requests were pending) those the node watches.
func (s *Server) revokePodOf(ctx context.Context, target string, recordLost bool) error {
	uid, ok := podUIDOf(target)
	if !ok {
		return nil // not kubelet's layout: the controller revokes once the Pod is gone
	}
	if err := s.Approval.RevokePod(ctx, uid, recordLost); err != nil {
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	return nil
}

// podUIDOf is the Pod UID in a target path of kubelet's layout,
// <kubelet root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount.
func podUIDOf(target string) (string, bool) {
	parts := strings.Split(filepath.Clean(target), string(filepath.Separator))
	for i := len(parts) - 3; i >= 0; i-- {
		if parts[i] == "pods" && parts[i+2] == "volumes" && parts[i+1] != "" {
			return parts[i+1], true
		}
	}
	return "", false
}
