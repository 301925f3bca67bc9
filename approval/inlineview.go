package approval

// inlineView is what a check written inline in an AccessPolicy sees of the request context.
// Such a check is the Connector owner's, and the Pod may be another tenant's, in a namespace
// the policy's author may not read: a template can put what it reads in the request's status
// (a value it fails with, a name it waits for), so it sees of the Pod and its Tekton owners
// only what a check selects by — each one's identity, labels, owners and creation time, and the Pod's
// ServiceAccount — never a spec, a status or the annotations (kubectl's
// last-applied-configuration holds a whole spec). The Connector is the policy's own
// namespace's, whole but for its status (see requestContext). Check and role templates of the
// system namespace, written by the platform's administrators, see the context whole.
func inlineView(rctx map[string]any) map[string]any {
	out := make(map[string]any, len(rctx))
	for key, v := range rctx {
		obj, isObject := v.(map[string]any)
		if key == keyConnector || !isObject {
			out[key] = v
			continue
		}
		out[key] = identityOf(obj)
	}
	return out
}

// keyConnector is the request context's Connector (requestContext).
const keyConnector = "connector"

// identityFields are the fields of an object's metadata an inline check sees (its creation
// time for a selector's createdSince).
var identityFields = []string{"name", "generateName", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp"}

// identityOf is obj's kind, identity, labels and owners, and its spec.serviceAccountName (a
// Pod's), from its unstructured form.
func identityOf(obj map[string]any) map[string]any {
	out := map[string]any{}
	for _, f := range []string{"apiVersion", "kind"} {
		if v, ok := obj[f]; ok {
			out[f] = v
		}
	}
	if meta, ok := obj["metadata"].(map[string]any); ok {
		kept := map[string]any{}
		for _, f := range identityFields {
			if v, ok := meta[f]; ok {
				kept[f] = v
			}
		}
		out["metadata"] = kept
	}
	if spec, ok := obj["spec"].(map[string]any); ok {
		if sa, ok := spec["serviceAccountName"]; ok {
			out["spec"] = map[string]any{"serviceAccountName": sa}
		}
	}
	return out
}
