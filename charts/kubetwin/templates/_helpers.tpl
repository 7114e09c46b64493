{{/*
Chart name, truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "kubetwin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters. If the release name already contains
the chart name it is used as is.
*/}}
{{- define "kubetwin.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "kubetwin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object of the release.
*/}}
{{- define "kubetwin.commonLabels" -}}
helm.sh/chart: {{ include "kubetwin.chart" . }}
app.kubernetes.io/part-of: kubetwin
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the operator's objects.
*/}}
{{- define "kubetwin.labels" -}}
{{ include "kubetwin.selectorLabels" . }}
{{ include "kubetwin.commonLabels" . }}
{{- end }}

{{/*
Selector labels of the operator pods (stable across upgrades: never add to them).
*/}}
{{- define "kubetwin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetwin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "kubetwin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetwin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "kubetwin.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Whether leader election is on: "true" or "" (use with `if`).
*/}}
{{- define "kubetwin.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{/*
Name of the bundled mosquitto broker's objects.
*/}}
{{- define "kubetwin.mosquitto.fullname" -}}
{{- printf "%s-mosquitto" (include "kubetwin.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/*
Selector labels of the bundled mosquitto broker.
*/}}
{{- define "kubetwin.mosquitto.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetwin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mqtt-broker
{{- end }}

{{/*
Labels of the bundled mosquitto broker's objects.
*/}}
{{- define "kubetwin.mosquitto.labels" -}}
{{ include "kubetwin.mosquitto.selectorLabels" . }}
{{ include "kubetwin.commonLabels" . }}
{{- end }}

{{/*
Broker URL the operator connects to: the bundled broker when mosquitto.enabled, otherwise
broker.url, which is then required.
*/}}
{{- define "kubetwin.brokerUrl" -}}
{{- if .Values.mosquitto.enabled }}
{{- printf "mqtt://%s:1883" (include "kubetwin.mosquitto.fullname" .) }}
{{- else if .Values.broker.url }}
{{- .Values.broker.url }}
{{- else }}
{{- fail "set broker.url (mqtt://host:port) or mosquitto.enabled=true" }}
{{- end }}
{{- end }}

{{/*
Rules the operator needs on kubetwin objects and Events, in a ClusterRole or in a Role of
each watched namespace. Nothing else: no Secrets, no ConfigMaps, no writes to Device spec.
*/}}
{{- define "kubetwin.operatorRules" -}}
- apiGroups: ["kubetwin.io"]
  resources: ["devices", "rebootrequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetwin.io"]
  resources: ["devices/status", "rebootrequests/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kubetwin.io"]
  resources: ["rebootrequests"]
  verbs: ["delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Checks of combinations the schema cannot express. Included by the Deployment.
*/}}
{{- define "kubetwin.validate" -}}
{{- if and (not .Values.mosquitto.enabled) (hasPrefix "mqtts://" .Values.broker.url) (not .Values.broker.tls.caSecret) }}
{{- fail "broker.url uses mqtts://: set broker.tls.caSecret to a Secret with the CA (PEM) that signs the broker's certificate" }}
{{- end }}
{{- if and .Values.broker.tls.clientSecret (not .Values.broker.tls.caSecret) }}
{{- fail "broker.tls.clientSecret (mutual TLS) needs broker.tls.caSecret and an mqtts:// broker.url" }}
{{- end }}
{{- if and .Values.broker.auth.passwordSecret (not .Values.broker.auth.username) }}
{{- fail "broker.auth.passwordSecret needs broker.auth.username (the operator only sends a password with a user name)" }}
{{- end }}
{{- end }}

{{/*
Configuration of the bundled mosquitto broker.
*/}}
{{- define "kubetwin.mosquitto.config" -}}
# Bundled broker of the kubetwin chart (mosquitto.enabled=true).
listener 1883
# QUICKSTART ONLY: anyone who can reach this port may connect without a user name or TLS,
# read every device's messages and send commands. Use a secured broker in production.
allow_anonymous true
# No state on disk: sessions and retained messages are lost when the pod restarts.
persistence false
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
{{- end }}

{{/*
Name of the metrics Service (a DNS-1035 label: at most 63 characters).
*/}}
{{- define "kubetwin.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kubetwin.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
