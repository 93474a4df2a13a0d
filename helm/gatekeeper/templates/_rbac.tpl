{{/*
RBAC rules per kind of namespace: exactly the API calls of gatekeeper/permissions.py
(tests/test_helm_chart.py renders the chart and compares, namespace by namespace).
*/}}

{{/* gatekeeper's own namespace: the state ConfigMap and the leader Lease. */}}
{{- define "gatekeeper.rbac.own" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, get, update]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, update]
{{- end -}}

{{/* Namespaces of the routes: the Traefik objects (both API groups) and Events on them. */}}
{{- define "gatekeeper.rbac.routes" -}}
- apiGroups: [traefik.io, traefik.containo.us]
  resources: [ingressroutes, traefikservices]
  verbs: [get, list, patch, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/*
The pairs' (production) namespaces: Deployments and their scale, Pods and their logs,
ConfigMaps for the config-parity rule; Secrets only with config.kubernetes.read_secrets
(a list of Secrets returns their values).
*/}}
{{- define "gatekeeper.rbac.pairs" -}}
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list]
{{- if (default dict .Values.config.kubernetes).read_secrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [list]
{{- end }}
{{- end -}}

{{/*
Namespace -> its kinds ("own", "routes", "pairs"), as YAML: the release namespace, both
namespaces of every pair, the namespace of every route.
*/}}
{{- define "gatekeeper.rbac.namespaceScopes" -}}
{{- $scopes := dict .Release.Namespace (dict "own" true) -}}
{{- range .Values.config.pairs -}}
{{- range .namespaces -}}
{{- $kinds := get $scopes . | default dict -}}
{{- $_ := set $kinds "pairs" true -}}
{{- $_ := set $scopes . $kinds -}}
{{- end -}}
{{- range .routes -}}
{{- $kinds := get $scopes .namespace | default dict -}}
{{- $_ := set $kinds "routes" true -}}
{{- $_ := set $scopes .namespace $kinds -}}
{{- end -}}
{{- end -}}
{{- toYaml $scopes -}}
{{- end -}}


{{/* Cluster-scoped: TokenReviews, only with config.auth.token_review (approvers by their
service-account token). */}}
{{- define "gatekeeper.rbac.cluster" -}}
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
{{- end -}}
