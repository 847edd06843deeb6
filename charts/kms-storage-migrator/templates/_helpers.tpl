{{/*
Every object is called kms-storage-migrator: the ClusterRole's name is part of the product's
contract (reviewers look it up by name), and one release per cluster is the supported shape.
*/}}
{{- define "kms-storage-migrator.name" -}}
kms-storage-migrator
{{- end }}

{{- define "kms-storage-migrator.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kms-storage-migrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kms-storage-migrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kms-storage-migrator.labels" -}}
helm.sh/chart: {{ include "kms-storage-migrator.chart" . }}
{{ include "kms-storage-migrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kms-storage-migrator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Where the etcd client certificate is mounted (read-only). */}}
{{- define "kms-storage-migrator.etcdCertDir" -}}
/etc/kms-storage-migrator/etcd
{{- end }}

{{/* The Lease the replicas compete for (in the release namespace), named after the project. */}}
{{- define "kms-storage-migrator.leaseName" -}}
{{ include "kms-storage-migrator.name" . }}
{{- end }}
