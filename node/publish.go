package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/contract"
	"github.com/kube-connectors/connectors-csi/node/atomicdir"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/render"
)

// Denied is the answer of an Authorizer that does not allow a Pod to use a Connector.
type Denied struct {
	Connector types.NamespacedName
	// Reason names the missing permission.
	Reason string
}

func (d *Denied) Error() string {
	return fmt.Sprintf("Pod may not use Connector %s: %s", d.Connector, d.Reason)
}

// Event reasons on the Pod.
const (
	reasonRepublishKept = "ConnectorsVolumeKept"
)

// NodePublishVolume renders the volume's files into a tmpfs at the target path. On a target
// that is already mounted it only rewrites changed files, and a transient failure keeps the old
// content and succeeds.
func (s *Server) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability must be of access type mount")
	}
	if !req.GetReadonly() {
		return nil, status.Error(codes.InvalidArgument, "readonly is false: set readOnly: true on the Pod's csi volume")
	}
	vr, err := parseAttributes(req.GetVolumeContext(), req.GetSecrets(), s.Config.Audience)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.checkMultiConnector(vr); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	gid, err := parseMountGroup(req.GetVolumeCapability().GetMount().GetVolumeMountGroup())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	target := req.GetTargetPath()
	defer s.targets.lock(target)()
	log := klog.FromContext(ctx).WithValues("volumeID", req.GetVolumeId(), "pod", klog.KRef(vr.pod.Namespace, vr.pod.Name))

	mounted, err := s.Mounter.IsMountPoint(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "inspect target %s: %v", target, err)
	}
	sources, err := s.resolveAll(ctx, vr, mounted)
	if err == nil && mounted {
		if done, err := s.republishUnchanged(ctx, req.GetVolumeId(), target, vr, sources, gid); done {
			republishesUnchanged.Inc()
			return s.answer(ctx, req.GetVolumeId(), vr, mounted, err)
		}
	}
	var files render.Files
	var rec *records.Record
	if err == nil {
		files, rec, err = s.render(ctx, vr, sources, !mounted) // a new volume's: resolveAll authorized them
	}
	if err == nil {
		if mounted {
			rec.AccessRequests = s.stillHeld(req.GetVolumeId(), rec.AccessRequests)
		}
		rec.VolumeID, rec.TargetPath, rec.Pod = req.GetVolumeId(), target, vr.pod
		rec.Fingerprint, rec.AuthFingerprint = fingerprints(vr, sources, gid, s.caFingerprint(ctx))
		rec.TokenSHA256, rec.AuthorizedAt = tokenHash(vr.token), s.now()
		for _, c := range vr.connectors {
			rec.Connectors = append(rec.Connectors, c.String())
		}
		err = s.write(target, mounted && s.renews(req.GetVolumeId(), rec), mounted, files, gid, rec)
	}
	if err == nil {
		if s.Approval != nil {
			s.Approval.Hold(rec.AccessRequests)
		}
		log.V(2).Info("Published volume", "target", target, "files", len(files), "republish", mounted)
	}
	return s.answer(ctx, req.GetVolumeId(), vr, mounted, err)
}

// stillHeld is the requests a republished volume holds: those its record named, and those the
// republish was admitted by. A republish admitted without a request that the volume held (the
// approval flag turned off meanwhile, the request deleted and a namespace-wide grant allowing
// the Pod) must not drop it from the record: unpublish would then revoke no grant it made.
// Every request a record names is the Pod's (its name has the Pod's UID), so revoking it at
// unpublish is always right.
func (s *Server) stillHeld(volumeID string, admitted []string) []string {
	old, err := s.Records.Load(volumeID)
	if err != nil || old == nil {
		return admitted
	}
	held := slices.Clone(old.AccessRequests)
	for _, ar := range admitted {
		if !slices.Contains(held, ar) {
			held = append(held, ar)
		}
	}
	return held
}

// answer ends a publish. A republish that failed for a transient reason, or because the Pod's
// request was revoked, keeps the mounted content and succeeds; the Pod gets one Event per
// outage (the first failure) and one when its request is found revoked, not one per republish.
func (s *Server) answer(ctx context.Context, volumeID string, vr *volumeRequest, mounted bool, err error) (*csi.NodePublishVolumeResponse, error) {
	revoked := errors.As(err, new(*revokedError))
	switch {
	case err == nil:
		s.kept.Delete(volumeID)
	case mounted && (isTransient(err) || revoked):
		klog.FromContext(ctx).Info("Republish failed; keeping the mounted content", "volumeID", volumeID, "err", err)
		if why, before := s.kept.Swap(volumeID, revoked); !before || why != revoked {
			s.podEvent(vr.pod, corev1.EventTypeWarning, reasonRepublishKept, "Connectors volume kept its previous content: %v", err)
		}
	default:
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// resolveAll reads the volume's Connectors and their classes from the caches. What a volume
// names is its Pod's author's choice: for a new volume a Connector is read only once the Pod
// may get it, as the proxy does, for a read of one it may not get would tell whether it
// exists and of which class, and start the node's watch of it. A mounted volume's Connectors
// were authorized by its first publish (render authorizes them again when the content
// changes); a failed read of one is answered as its authorization is, when it is refused.
func (s *Server) resolveAll(ctx context.Context, vr *volumeRequest, mounted bool) ([]render.Source, error) {
	sources := make([]render.Source, 0, len(vr.connectors))
	for _, nn := range vr.connectors {
		if !mounted {
			if err := s.authorize(ctx, vr, nn); err != nil {
				return nil, err
			}
		}
		src, err := s.resolve(ctx, nn, mounted)
		if err != nil {
			if mounted {
				if aerr := s.authorize(ctx, vr, nn); aerr != nil {
					return nil, aerr
				}
			}
			return nil, err
		}
		sources = append(sources, src)
	}
	return sources, nil
}

// authorize tells whether the volume's Pod may get the Connector nn, as a gRPC status.
func (s *Server) authorize(ctx context.Context, vr *volumeRequest, nn types.NamespacedName) error {
	if err := s.Authorizer.AuthorizeConnector(ctx, vr.pod, nn.Namespace, nn.Name); err != nil {
		return authorizationError(vr, nn, err)
	}
	return nil
}

// render authorizes (unless authorized already) and renders a volume request, in memory, and
// returns the record of what the volume holds (the AccessRequests whose grants it carries;
// whether it was rejected).
func (s *Server) render(ctx context.Context, vr *volumeRequest, sources []render.Source, authorized bool) (render.Files, *records.Record, error) {
	rec := &records.Record{}
	for _, src := range sources {
		nn := types.NamespacedName{Namespace: src.Connector.Namespace, Name: src.Connector.Name}
		if !authorized {
			if err := s.authorize(ctx, vr, nn); err != nil {
				return nil, nil, err
			}
		}
		if s.Approval == nil {
			continue
		}
		adm, err := s.Approval.Admit(ctx, vr.pod, src.Connector)
		if err != nil {
			return nil, nil, authorizationError(vr, nn, err)
		}
		switch {
		case adm.Granted:
			if adm.AccessRequest != "" {
				rec.AccessRequests = append(rec.AccessRequests, adm.AccessRequest)
			}
		case adm.Rejected:
			// The grants of the Connectors before this one stay in the volume's record, and so
			// does this request: unpublish revokes them all.
			files, err := errorFile(adm)
			rec.AccessRequests, rec.Rejected = append(rec.AccessRequests, adm.AccessRequest), true
			return files, rec, err
		case adm.Revoked:
			return nil, nil, &revokedError{status.Newf(codes.FailedPrecondition, "AccessRequest %s grants nothing: %s", adm.AccessRequest, adm.Message)}
		case adm.Failed:
			return nil, nil, status.Errorf(codes.FailedPrecondition, "AccessRequest %s cannot be evaluated: %s", adm.AccessRequest, adm.Message)
		default:
			return nil, nil, status.Errorf(codes.Unavailable, "waiting for AccessRequest %s: %s", adm.AccessRequest, adm.Message)
		}
	}
	files, err := s.renderFiles(ctx, vr, sources)
	return files, rec, err
}

// renderFiles renders the volume's files, without authorizing anything.
func (s *Server) renderFiles(ctx context.Context, vr *volumeRequest, sources []render.Source) (render.Files, error) {
	ca, err := s.CA.CACert(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "proxy CA: %v", err)
	}
	files, err := s.Renderer.Render(render.Request{
		Sources:        sources,
		Configurations: vr.configurations,
		Excluded:       vr.excluded,
		Params:         vr.params,
		Token:          vr.token,
		CACert:         ca,
		PodNamespace:   vr.pod.Namespace,
	})
	var inputErr *render.InputError
	var classErr *render.ClassError
	switch {
	case errors.As(err, &inputErr):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &classErr):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "render: %v", err)
	}
	return files, nil
}

// authorizationError maps an authorization failure to its gRPC status.
func authorizationError(vr *volumeRequest, nn types.NamespacedName, err error) error {
	var denied *Denied
	if errors.As(err, &denied) {
		return status.Error(codes.PermissionDenied, denied.Error())
	}
	return status.Errorf(codes.Unavailable, "authorize Pod %s/%s for Connector %s: %v", vr.pod.Namespace, vr.pod.Name, nn, err)
}

// resolve reads a Connector and its class from the informer caches: for a mounted volume,
// from the Connector's watch, kept while it is missing, so that the volume sees it made again;
// for a new one, with a lookup (Lookups), which watches only a Connector that exists. A Pod's
// author names a new volume's Connectors, and may name made-up ones by the thousand (kubelet
// retries each): a watch of each would cost the API server, and push out of the node's cache
// the Connectors other Pods use.
func (s *Server) resolve(ctx context.Context, nn types.NamespacedName, mounted bool) (render.Source, error) {
	read := s.Objects
	if !mounted && s.Lookups != nil {
		read = s.Lookups
	}
	var c v1alpha1.Connector
	if err := read.Get(ctx, nn, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return render.Source{}, status.Errorf(codes.NotFound, "Connector %s not found", nn)
		}
		if apierrors.IsRequestEntityTooLargeError(err) {
			return render.Source{}, status.Error(codes.FailedPrecondition, err.Error())
		}
		return render.Source{}, status.Errorf(codes.Unavailable, "read Connector %s: %v", nn, err)
	}
	// Admission refuses such addresses; this is for Connectors stored before it did, or
	// without the webhook: their files would carry settings the address smuggles in.
	if errs := contract.Addresses(&c); len(errs) > 0 {
		return render.Source{}, status.Errorf(codes.FailedPrecondition, "Connector %s: %v", nn, errs.ToAggregate())
	}
	var class v1alpha1.ConnectorClass
	if err := s.getClass(ctx, c.Spec.ConnectorClassName, &class); err != nil {
		if apierrors.IsNotFound(err) {
			return render.Source{}, status.Errorf(codes.NotFound, "ConnectorClass %q of Connector %s not found", c.Spec.ConnectorClassName, nn)
		}
		return render.Source{}, status.Errorf(codes.Unavailable, "read ConnectorClass %q: %v", c.Spec.ConnectorClassName, err)
	}
	return render.Source{Connector: &c, Class: &class}, nil
}

// getClass reads the ConnectorClass name from the informer cache, and from the API server
// when the cache has not seen it: a class applied together with its Connector and the Pod
// may not have reached the node's watch by the Pod's first publish (the Connector, watched by
// name, is read live the first time). The kubelet's backoff between publishes bounds these
// reads for a class that does not exist; the proxy, which any request reaches, does not make
// them.
func (s *Server) getClass(ctx context.Context, name string, class *v1alpha1.ConnectorClass) error {
	key := types.NamespacedName{Name: name}
	err := s.Objects.Get(ctx, key, class)
	if apierrors.IsNotFound(err) && s.LiveClasses != nil {
		err = s.LiveClasses.Get(ctx, key, class)
	}
	return err
}

// renews tells whether a mounted volume's full publish authorized what its last one did (the
// same authorization inputs, neither of them a rejection): its content then grows only by a
// class or the proxy CA, which an administrator changes, and its growth is a renewal (fill).
func (s *Server) renews(volumeID string, rec *records.Record) bool {
	prev, err := s.Records.Load(volumeID)
	return err == nil && prev != nil && prev.AuthFingerprint == rec.AuthFingerprint && !prev.Rejected && !rec.Rejected
}

// write mounts the target when it is not yet mounted, writes the files and saves the record.
// The node's volume budget takes the files first (takeBudget): a namespace at its share, its
// publishes retried by kubelet, costs no mount and unmount each. A failure on a first publish
// leaves nothing mounted.
func (s *Server) write(target string, renewal, mounted bool, files render.Files, gid *int64, rec *records.Record) error {
	undo, err := s.takeBudget(files, rec, mounted, renewal)
	if err != nil {
		return err
	}
	if !mounted {
		if err := os.MkdirAll(target, 0o750); err != nil {
			undo()
			return status.Errorf(codes.Internal, "create target %s: %v", target, err)
		}
		// Twice the limit: an update writes the files that changed (the token's, at every
		// renewal) beside the ones it replaces, then removes those (atomicdir); within the
		// limit alone, a volume over half of it could never renew its token. A tmpfs holds
		// the pages written, not its size, and the node's budget counts the files.
		if err := s.Mounter.MountTmpfs(target, 2*s.Config.VolumeSizeLimit); err != nil {
			undo()
			_ = os.Remove(target)
			return status.Errorf(codes.Internal, "mount tmpfs at %s: %v", target, err)
		}
	}
	err = s.writeFiles(target, files, gid, rec, undo)
	if err != nil && !mounted {
		if uerr := s.Mounter.Unmount(target); uerr != nil {
			klog.ErrorS(uerr, "Unmount after a failed publish", "target", target)
		}
		s.budget.release(rec.VolumeID)
	}
	return err
}

// fill writes the files into the mounted target and saves the record, once the node's volume
// budget takes them.
func (s *Server) fill(target string, files render.Files, gid *int64, rec *records.Record, mounted, renewal bool) error {
	undo, err := s.takeBudget(files, rec, mounted, renewal)
	if err != nil {
		return err
	}
	return s.writeFiles(target, files, gid, rec, undo)
}

// takeBudget has the node's volume budget take the files (volumeBudget.take): a new volume's,
// and a mounted one's content grown by what the tenant changes, only within the bound; a
// mounted one's renewal (its new token, or the content of a class or proxy CA an administrator
// changed) whatever it takes, for its Pod runs with what it has and needs its token renewed.
// A volume whose files are not taken keeps its earlier files and use.
func (s *Server) takeBudget(files render.Files, rec *records.Record, mounted, renewal bool) (undo func(), err error) {
	rec.Bytes = footprint(files)
	if n, limit := contentPages(files), s.Config.VolumeSizeLimit; !renewal && limit > 0 && n > limit {
		// Refused whole rather than half written. A renewal is not: its Pod runs with what it
		// has, and the tmpfs has room for it (twice the limit).
		return nil, status.Errorf(codes.FailedPrecondition, "the volume's files take %d bytes, more than its %d (--volume-size-limit): name fewer configurations or Connectors in it",
			n, limit)
	}
	return s.budget.take(rec.VolumeID, rec.Pod.Namespace, rec.Bytes, mounted, renewal)
}

// writeFiles writes the files the budget took into the mounted target and saves the record; a
// failed write gives the budget back (undo), and the volume keeps its earlier files.
func (s *Server) writeFiles(target string, files render.Files, gid *int64, rec *records.Record, undo func()) error {
	if _, err := atomicdir.Write(target, files, atomicdir.Ownership{GID: gid}); err != nil {
		undo()
		return status.Errorf(codes.Internal, "write files into %s: %v", target, err)
	}
	if err := s.Records.Save(rec); err != nil {
		return status.Errorf(codes.Internal, "save volume record: %v", err)
	}
	return nil
}

// parseMountGroup reads the fsGroup kubelet hands over through VOLUME_MOUNT_GROUP.
func parseMountGroup(v string) (*int64, error) {
	if v == "" {
		return nil, nil
	}
	gid, err := strconv.ParseInt(v, 10, 64)
	if err != nil || gid < 0 {
		return nil, fmt.Errorf("volume_mount_group %q is not a group ID", v)
	}
	return &gid, nil
}

// revokedError refuses a publish whose Pod's request was revoked (FailedPrecondition). A
// mounted volume keeps its content (the proxy refuses its token already) and its Pod gets one
// Event, rather than a failed republish every minute for every Pod of a Connector made again.
type revokedError struct{ st *status.Status }

func (e *revokedError) Error() string              { return e.st.Err().Error() }
func (e *revokedError) GRPCStatus() *status.Status { return e.st }

// isTransient tells errors worth retrying (the API server or the node misbehaving) from faults
// of the request or its objects.
func isTransient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.Unknown:
		return true
	}
	return false
}

func (s *Server) podEvent(pod records.Pod, eventType, reason, format string, args ...any) {
	if s.Events == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: types.UID(pod.UID)}
	s.Events.Eventf(ref, eventType, reason, format, args...)
}
