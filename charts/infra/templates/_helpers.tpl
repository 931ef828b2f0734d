{{/*
Names. Kubernetes allows 63 characters in a name (and in a label value), so every name is cut
to that; a name with a suffix cuts the base first, so the suffix survives and two suffixed
names never collide.
*/}}

{{- define "infra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infra.fullname" -}}
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

{{/* The full name with a suffix: (list $ "suffix"). */}}
{{- define "infra.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "infra.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "infra.labels" -}}
helm.sh/chart: {{ include "infra.chart" . }}
{{ include "infra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "infra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "infra.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "infra.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the user's existing Secret, or the one the chart makes. */}}
{{- define "infra.tlsSecretName" -}}
{{- default (include "infra.suffixed" (list . "tls")) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "infra.rootKeySecretName" -}}
{{- default (include "infra.suffixed" (list . "root-key")) .Values.control.rootKey.existingSecret -}}
{{- end -}}

{{- define "infra.adminPasswordSecretName" -}}
{{- default (include "infra.suffixed" (list . "admin-password")) .Values.control.adminPassword.existingSecret -}}
{{- end -}}

{{- define "infra.policyConfigMapName" -}}
{{- default (include "infra.suffixed" (list . "policy")) .Values.policy.existingConfigMap -}}
{{- end -}}

{{- define "infra.pvcName" -}}
{{- default (include "infra.suffixed" (list . "data")) .Values.control.database.persistence.existingClaim -}}
{{- end -}}

{{/* True ("true") when the pods keep SQLite on a claim, which allows one replica only. */}}
{{- define "infra.sqlite" -}}
{{- if and .Values.control.enabled (eq .Values.control.database.type "sqlite") -}}true{{- end -}}
{{- end -}}

{{/*
True ("true") when the pods get a policy file: only with the control plane. In proxy-only mode
the grants come from the control plane and infra-proxy refuses --policy with --control-url, so
policy.enabled is ignored there (and a policy given anyway is refused by infra.validate).
*/}}
{{- define "infra.policy" -}}
{{- if and .Values.control.enabled .Values.policy.enabled -}}true{{- end -}}
{{- end -}}

{{/* True ("true") in proxy-only mode with a CA for the control API named. */}}
{{- define "infra.controlCA" -}}
{{- if and (not .Values.control.enabled) (or .Values.sync.controlCA.existingSecret .Values.sync.controlCA.existingConfigMap) -}}true{{- end -}}
{{- end -}}

{{/* The Service's DNS names, which the generated and cert-manager certificates cover. */}}
{{- define "infra.dnsNames" -}}
{{- $svc := include "infra.fullname" . -}}
{{- $names := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- if and .Values.ingress.enabled .Values.ingress.host -}}
{{- $names = append $names .Values.ingress.host -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.controlHost .Values.control.enabled -}}
{{- $names = append $names .Values.ingress.controlHost -}}
{{- end -}}
{{- concat $names .Values.tls.dnsNames | uniq | toJson -}}
{{- end -}}

{{- define "infra.publicURL" -}}
{{- if .Values.publicURL -}}
{{- .Values.publicURL -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%d" (include "infra.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}
{{- end -}}

{{- define "infra.controlPublicURL" -}}
{{- if .Values.control.publicURL -}}
{{- .Values.control.publicURL -}}
{{- else if and .Values.ingress.enabled .Values.ingress.controlHost -}}
{{- printf "https://%s" .Values.ingress.controlHost -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%d" (include "infra.fullname" .) .Release.Namespace (int .Values.service.controlPort) -}}
{{- end -}}
{{- end -}}

{{/*
Refuses combinations of values that the schema cannot express, before anything is rendered.
*/}}
{{- define "infra.validate" -}}
{{- if .Values.control.enabled -}}
{{- if and (eq .Values.control.database.type "sqlite") (gt (int .Values.replicaCount) 1) -}}
{{- fail "replicaCount > 1 needs control.database.type=postgres (SQLite on a volume serves one replica), or control.enabled=false (proxy only)" -}}
{{- end -}}
{{- if and (eq .Values.control.database.type "postgres") (not .Values.control.database.postgres.existingSecret) -}}
{{- fail "control.database.type=postgres needs control.database.postgres.existingSecret: a Secret holding the PostgreSQL URL" -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling.enabled is for proxy-only mode (control.enabled=false)" -}}
{{- end -}}
{{- else -}}
{{- if not .Values.sync.controlURL -}}
{{- fail "proxy-only mode (control.enabled=false) needs sync.controlURL: the control plane's URL" -}}
{{- end -}}
{{- if not .Values.sync.accessKey.existingSecret -}}
{{- fail "proxy-only mode (control.enabled=false) needs sync.accessKey.existingSecret: a Secret holding this proxy's access key (of a user with role connector on infra)" -}}
{{- end -}}
{{- if and .Values.sync.controlCA.existingSecret .Values.sync.controlCA.existingConfigMap -}}
{{- fail "set sync.controlCA.existingSecret or sync.controlCA.existingConfigMap, not both" -}}
{{- end -}}
{{- if or .Values.policy.existingConfigMap .Values.policy.existingSecret (ne (toJson .Values.policy.content) (toJson (dict "grants" (list)))) -}}
{{- fail "proxy-only mode (control.enabled=false) takes its grants from the control plane and infra-proxy refuses a policy file there: leave policy.existingConfigMap, policy.existingSecret and policy.content unset, and give the policy file to the control plane's release" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "set tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.enabled needs ingress.host" -}}
{{- end -}}
{{- if and .Values.policy.existingConfigMap .Values.policy.existingSecret -}}
{{- fail "set policy.existingConfigMap or policy.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is more than autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
