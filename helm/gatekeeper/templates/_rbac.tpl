{{/*
RBAC rules per kind of namespace: exactly the API calls of gatekeeper/permissions.py
(tests/test_helm_chart.py renders the chart and compares, namespace by namespace).
*/}}

{{/* gatekeeper's own namespace: the state ConfigMap and the leader Lease (with
config.sharding.enabled the shard and member Leases, listed once per retry period, and the
member Leases of dead replicas deleted once long expired). */}}
{{- define "gatekeeper.rbac.own" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, get, update]
{{- if (default dict .Values.config.sharding).enabled }}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, delete, get, list, update]
{{- else }}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, update]
{{- end }}
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

{{/* Both namespaces of a pair with test_job: its test Job, created per release in the dark
namespace, read while it runs, deleted when validation stops before it finished. */}}
{{- define "gatekeeper.rbac.tests" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, delete, get]
{{- end -}}

{{/*
Namespace -> its kinds ("own", "routes", "pairs", "tests"), as YAML: the release namespace,
both namespaces of every pair (and "tests" for a pair with test_job), the namespace of every
route, and rbac.pairNamespaces (a name: "pairs"; {namespace, kinds}: those kinds), the
namespaces of pairs declared as objects (gatekeeper/permissions.py's `listed_namespaces`).
*/}}
{{- define "gatekeeper.rbac.namespaceScopes" -}}
{{- $scopes := dict .Release.Namespace (dict "own" true) -}}
{{- range (default list .Values.rbac.pairNamespaces) -}}
{{- $namespace := . -}}
{{- $wanted := list "pairs" -}}
{{- if kindIs "map" . -}}
{{- $namespace = .namespace -}}
{{- $wanted = .kinds -}}
{{- end -}}
{{- $kinds := get $scopes $namespace | default dict -}}
{{- range $wanted -}}
{{- $_ := set $kinds . true -}}
{{- end -}}
{{- $_ := set $scopes $namespace $kinds -}}
{{- end -}}
{{- range .Values.config.pairs -}}
{{- $tests := .test_job -}}
{{- range .namespaces -}}
{{- $kinds := get $scopes . | default dict -}}
{{- $_ := set $kinds "pairs" true -}}
{{- if $tests -}}
{{- $_ := set $kinds "tests" true -}}
{{- end -}}
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


{{/* Cluster-wide: TokenReviews with config.auth.token_review (approvers by their
service-account token); the BlueGreenPair objects of every namespace, their status and
Events on them with config.objects.enabled (the default). */}}
{{- define "gatekeeper.rbac.cluster" -}}
{{- if (default dict .Values.config.auth).token_review }}
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
{{- end }}
{{- if include "gatekeeper.objectsEnabled" . }}
- apiGroups: [bluegreen.dev]
  resources: [bluegreenpairs]
  verbs: [get, list, watch]
- apiGroups: [bluegreen.dev]
  resources: [bluegreenpairs/status]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
{{- end -}}

{{/* "true" when gatekeeper reads BlueGreenPair objects (config.objects.enabled, default on). */}}
{{- define "gatekeeper.objectsEnabled" -}}
{{- $objects := default dict .Values.config.objects -}}
{{- if or (not (hasKey $objects "enabled")) $objects.enabled -}}true{{- end -}}
{{- end -}}
