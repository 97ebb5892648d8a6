{{/* The release's name for every object: <release>-dra-hal, or the release name when it has "dra-hal". */}}
{{- define "dra-hal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ClusterRole's and ClusterRoleBinding's name: cluster-scoped, so <namespace>-<fullname>. */}}
{{- define "dra-hal.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "dra-hal.fullname" .) -}}
{{- end -}}

{{/* The ValidatingAdmissionPolicy and its binding (cluster-scoped): resourceslices-policy-<namespace>-<fullname>. */}}
{{- define "dra-hal.resourceSlicePolicyName" -}}
{{- printf "resourceslices-policy-%s" (include "dra-hal.clusterRoleName" .) -}}
{{- end -}}

{{- define "dra-hal.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dra-hal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dra-hal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dra-hal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dra-hal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A DeviceClass's spec.extendedResourceName (Kubernetes 1.36 beta, DRAExtendedResource; alpha in 1.34
and 1.35), from deviceClasses.extendedResourceNames[<class>], when set: a pod asking that resource
(`nvidia.com/gpu: 1`) is served by this class's devices without a ResourceClaim. Takes (list names class).
*/}}
{{- define "dra-hal.extendedResourceName" -}}
{{- $name := index (index . 0) (index . 1) -}}
{{- if $name }}
{{- if not (regexMatch "^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+[a-z]{2,}/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$" $name) }}
{{- fail (printf "deviceClasses.extendedResourceNames.%s: %q is not an extended resource name (domain/name, e.g. nvidia.com/gpu)" (index . 1) $name) }}
{{- end }}
  extendedResourceName: {{ $name | quote }}
{{- end }}
{{- end }}
