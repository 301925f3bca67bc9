{{/* Labels Helm's own tooling expects, added to every object's metadata (never to selectors). */}}
{{- define "connectors.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "connectors.image" -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest) -}}
{{- fail (printf "image.digest %q is not sha256:<64 hex digits>" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end }}

{{/*
connectors.static renders a file of deploy/ (reached through the chart's files/ links) as this
release's objects: connectors-system becomes the release's namespace, namespaced objects get
that namespace, every object gets the chart's labels. Hand-written because the kustomize base
is the source of these objects and Helm has no kustomize step: this keeps one copy of them.
Arguments: a dict with "ctx" (the root context) and "file" (a path under files/).
*/}}
{{- define "connectors.static" -}}
{{- $ctx := .ctx -}}
{{- $text := $ctx.Files.Get .file -}}
{{- if not $text }}{{ fail (printf "chart file %s is missing or empty" .file) }}{{ end -}}
{{- $clusterScoped := list "Namespace" "ClusterRole" "ClusterRoleBinding" "CustomResourceDefinition" "CSIDriver" "ValidatingWebhookConfiguration" "ValidatingAdmissionPolicy" "ValidatingAdmissionPolicyBinding" "FlowSchema" "PriorityLevelConfiguration" "ConnectorClass" "ResourceInterface" -}}
{{- $labels := include "connectors.labels" $ctx | fromYaml -}}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" ($text | replace "connectors-system" $ctx.Release.Namespace) -1 }}
{{- $obj := fromYaml $doc }}
{{- if hasKey $obj "Error" }}{{ fail (printf "%s: %s" $.file $obj.Error) }}{{ end }}
{{- if $obj.kind }}
{{- if not (has $obj.kind $clusterScoped) }}{{ $_ := set $obj.metadata "namespace" $ctx.Release.Namespace }}{{ end }}
{{- $_ := set $obj.metadata "labels" (merge (default (dict) $obj.metadata.labels) $labels) }}
---
{{ toYaml $obj }}
{{- end }}
{{- end }}
{{- end }}

{{/* Extra container env and args lists, and the scheduling fields shared by both workloads. */}}
{{- define "connectors.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
