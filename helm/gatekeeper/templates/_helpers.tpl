{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "gatekeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-name-chart-name, or just the release name when it already contains the chart name. */}}
{{- define "gatekeeper.fullname" -}}
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

{{- define "gatekeeper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod selector labels: never change them after the first install (Deployments refuse). */}}
{{- define "gatekeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatekeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gatekeeper.labels" -}}
helm.sh/chart: {{ include "gatekeeper.chart" . }}
{{ include "gatekeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatekeeper
{{- end -}}

{{- define "gatekeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gatekeeper.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gatekeeper.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the API and webhook bearer token. */}}
{{- define "gatekeeper.tokenSecretName" -}}
{{- default (printf "%s-token" (include "gatekeeper.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Where the container finds its files. */}}
{{- define "gatekeeper.configDir" -}}/etc/gatekeeper{{- end -}}
{{- define "gatekeeper.rulesDir" -}}/etc/gatekeeper/rules{{- end -}}
{{- define "gatekeeper.tokenDir" -}}/var/run/secrets/gatekeeper{{- end -}}
{{- define "gatekeeper.notificationsDir" -}}/etc/gatekeeper/notifications{{- end -}}

{{/*
The configuration file: .Values.config with the settings the chart owns forced in (the paths
of the mounted rules and token, in-cluster Kubernetes access, the listening port, the
release namespace for the state ConfigMap and the leader Lease, and watch streams per
namespace unless rbac.scope is cluster).
*/}}
{{- define "gatekeeper.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "rule_files" (list (printf "%s/" (include "gatekeeper.rulesDir" .))) -}}
{{- $_ := set $config "kubernetes" (mergeOverwrite (default dict $config.kubernetes) (dict "mode" "in_cluster")) -}}
{{- /* Namespaced Roles cannot serve cluster-wide watch streams: keep them per namespace. */ -}}
{{- if ne .Values.rbac.scope "cluster" -}}
{{- $watch := mergeOverwrite (default dict $config.kubernetes.watch) (dict "scope" "namespaces") -}}
{{- $_ := set $config.kubernetes "watch" $watch -}}
{{- end -}}
{{- $_ := set $config "server" (dict "host" "0.0.0.0" "port" (int .Values.containerPort)) -}}
{{- $token := printf "%s/%s" (include "gatekeeper.tokenDir" .) .Values.auth.secretKey -}}
{{- $_ := set $config "auth" (mergeOverwrite (default dict $config.auth) (dict "token_file" $token)) -}}
{{- $_ := set $config "state" (mergeOverwrite (default dict $config.state) (dict "namespace" .Release.Namespace)) -}}
{{- $lease := dict "enabled" true "namespace" .Release.Namespace -}}
{{- $_ := set $config "leader_election" (mergeOverwrite (default dict $config.leader_election) $lease) -}}
{{- toYaml $config -}}
{{- end -}}
