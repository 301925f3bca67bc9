package node

import (
	"context"
	"errors"

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

	if err := s.revoke(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := s.Mounter.Unmount(target); err != nil {
		return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
	}
	if err := s.Records.Delete(req.GetVolumeId()); err != nil {
		return nil, status.Errorf(codes.Internal, "delete volume record: %v", err)
	}
	s.kept.Delete(req.GetVolumeId()) // a volume that went during an outage: nothing to report of it again
	klog.FromContext(ctx).V(2).Info("Unpublished volume", "volumeID", req.GetVolumeId(), "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// revoke ends the grants the volume's AccessRequests hold, before its files go away, so that a
// failure leaves the volume for kubelet to retry.
func (s *Server) revoke(ctx context.Context, volumeID string) error {
	if s.Approval == nil {
		return nil
	}
	rec, err := s.Records.Load(volumeID)
	if errors.Is(err, records.ErrUnreadable) {
		// Failing would fail every retry, and the Pod would never end. The controller revokes
		// the Pod's requests once the Pod is gone (its Pod recheck); a republish of a live
		// volume writes the record anew.
		klog.FromContext(ctx).Error(err, "Unpublishing a volume whose record cannot be read: its AccessRequests are revoked by the controller once the Pod is gone", "volumeID", volumeID)
		return nil
	}
	if err != nil {
		return status.Errorf(codes.Internal, "read volume record: %v", err)
	}
	if rec == nil || len(rec.AccessRequests) == 0 {
		return nil
	}
	if err := s.Approval.Revoke(ctx, rec.AccessRequests); err != nil {
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	return nil
}
