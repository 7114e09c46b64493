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
It creates MethodRequests only as the children of a DeviceJob, whose creator passed the
method-permissions policy for the job's method when creating the job; hence invoke on every
method, and finalizers (not spec) on DeviceJobs.
*/}}
{{- define "kubetwin.operatorRules" -}}
- apiGroups: ["kubetwin.io"]
  resources: ["devices", "rebootrequests", "methodrequests", "devicejobs", "devicedisruptionbudgets", "deviceconfigurations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetwin.io"]
  resources: ["devices/status", "rebootrequests/status", "methodrequests/status", "devicejobs/status", "devicedisruptionbudgets/status", "deviceconfigurations/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kubetwin.io"]
  resources: ["rebootrequests", "methodrequests", "devicejobs"]
  verbs: ["delete"]
- apiGroups: ["kubetwin.io"]
  resources: ["methodrequests"]
  verbs: ["create"]
- apiGroups: ["kubetwin.io"]
  resources: ["devicejobs"]
  verbs: ["patch"]
- apiGroups: ["kubetwin.io"]
  resources: ["devicejobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["kubetwin.io"]
  resources: ["methods"]
  verbs: ["invoke"]
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
{{- if and .Values.mosquitto.enabled (not .Values.mosquitto.auth.allowAnonymousInsecure) }}
{{- if not .Values.mosquitto.auth.passwordFileSecret }}
{{- fail (printf `mosquitto.enabled=true needs per-device credentials: set mosquitto.auth.passwordFileSecret.
It names a Secret whose key %q (mosquitto.auth.passwordFileKey) is a mosquitto password file with
the operator's user (broker.auth.username, e.g. kubetwin-operator) and one user per device, whose
user name is its deviceId. Create it with:
  mosquitto_passwd -c -b ./passwords kubetwin-operator OPERATOR_PASSWORD
  mosquitto_passwd -b ./passwords DEVICE_ID DEVICE_PASSWORD     # once per device
  kubectl -n %s create secret generic kubetwin-mosquitto-passwords --from-file=%s=./passwords
and install with --set mosquitto.auth.passwordFileSecret=kubetwin-mosquitto-passwords (see docs/security.md).
Only on a laptop: mosquitto.auth.allowAnonymousInsecure=true lets any client act as any device.` .Values.mosquitto.auth.passwordFileKey .Release.Namespace .Values.mosquitto.auth.passwordFileKey) }}
{{- end }}
{{- if or (not .Values.broker.auth.username) (not .Values.broker.auth.passwordSecret) }}
{{- fail `the bundled broker (mosquitto.enabled=true) authenticates the operator too: set broker.auth.username
(typically kubetwin-operator, a user of the password file) and broker.auth.passwordSecret (a Secret
whose key "password", see broker.auth.passwordKey, holds that user's password), for example
  kubectl create secret generic kubetwin-mqtt-auth --from-literal=password=OPERATOR_PASSWORD
  --set broker.auth.username=kubetwin-operator --set broker.auth.passwordSecret=kubetwin-mqtt-auth` }}
{{- end }}
{{- if not (regexMatch "^[^\\s+#/]+$" .Values.broker.auth.username) }}
{{- fail (printf "broker.auth.username %q cannot name the operator in the bundled broker's topic ACL: use no whitespace, '+', '#' or '/'" .Values.broker.auth.username) }}
{{- end }}
{{- end }}
{{- if and .Values.mosquitto.enabled .Values.mosquitto.tls.enabled (not .Values.mosquitto.tls.secret) }}
{{- fail "mosquitto.tls.enabled=true needs mosquitto.tls.secret: a kubernetes.io/tls Secret with tls.crt and tls.key (the broker's certificate) and ca.crt (the CA that issues device certificates), as cert-manager writes it (see docs/security.md)" }}
{{- end }}
{{- end }}

{{/*
Configuration of the bundled mosquitto broker (the ConfigMap key mosquitto.conf). Secure by
default: every client authenticates (password file on 1883, client certificate on 8883), its
client id is forced to that identity, and the topic ACL (kubetwin.mosquitto.acl) lets a device
act only as itself. mosquitto.auth.allowAnonymousInsecure drops all of that.
*/}}
{{- define "kubetwin.mosquitto.config" -}}
{{- $insecure := .Values.mosquitto.auth.allowAnonymousInsecure -}}
# Bundled broker of the kubetwin chart (mosquitto.enabled=true).
{{- if $insecure }}
# INSECURE (mosquitto.auth.allowAnonymousInsecure=true): anyone who can reach a listener may
# connect without credentials, act as any device, read every device's messages and send
# commands. Laptop only.
{{- else }}
# Every client authenticates; its client id is forced to its identity (user name, or the
# common name of its certificate), and the topic ACL lets a device act only as itself.
per_listener_settings true
{{- end }}
# No state on disk: sessions and retained messages are lost when the pod restarts.
persistence false
# QoS 1 messages queued per client, at most (mosquitto.maxQueuedMessages): the operator's
# queue must hold what the fleet sends while it is away and the resync burst after.
max_queued_messages {{ int .Values.mosquitto.maxQueuedMessages }}
# Largest packet accepted or forwarded (mosquitto.maxPacketBytes), at most the operator's
# --max-packet-bytes.
max_packet_size {{ int .Values.mosquitto.maxPacketBytes }}
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
{{- if $insecure }}
# Plain MQTT, anonymous.
listener 1883
allow_anonymous true
{{- else }}
# Plain MQTT: user name (= deviceId) and password from the password file.
listener 1883
use_username_as_clientid true
allow_anonymous false
password_file /mosquitto/auth/passwords
acl_file /mosquitto/config/acl
{{- end }}
{{- if .Values.mosquitto.tls.enabled }}
# MQTT over TLS: a client certificate from the CA in ca.crt is required; its common name is the
# client's user name (= deviceId).
listener 8883
cafile /mosquitto/tls/ca.crt
certfile /mosquitto/tls/tls.crt
keyfile /mosquitto/tls/tls.key
require_certificate true
use_identity_as_username true
{{- if $insecure }}
allow_anonymous true
{{- else }}
use_username_as_clientid true
allow_anonymous false
acl_file /mosquitto/config/acl
{{- end }}
{{- end }}
{{- end }}

{{/*
Topic ACL of the bundled broker (the ConfigMap key acl), from broker.topicRoot and the
operator's user name broker.auth.username. The e2e harness generates the same text from Rust
and a test compares them: change both together.
*/}}
{{- define "kubetwin.mosquitto.acl" -}}
{{- $root := .Values.broker.topicRoot -}}
{{- $operator := .Values.broker.auth.username -}}
# kubetwin topic ACL (generated): every device acts only as itself; %u is its identity,
# which is its deviceId (the user name, or the certificate's common name).
pattern write {{ $root }}/%u/twin/reported
pattern write {{ $root }}/%u/twin/get
pattern write {{ $root }}/%u/rpc/res/+
pattern write {{ $root }}/%u/presence
pattern read {{ $root }}/%u/twin/desired
pattern read {{ $root }}/%u/rpc/req/#
# Every device reads the operator's session announcement (a new one asks for a resync).
pattern read {{ $root }}/_operator/session
# The operator reads what devices send, and alone writes desired documents and requests.
user {{ $operator }}
topic read {{ $root }}/+/twin/reported
topic read {{ $root }}/+/twin/get
topic read {{ $root }}/+/rpc/res/+
topic read {{ $root }}/+/presence
topic readwrite {{ $root }}/+/twin/desired
topic write {{ $root }}/+/rpc/req/#
topic write {{ $root }}/_operator/session
{{- end }}

{{/*
Name of the metrics Service (a DNS-1035 label: at most 63 characters).
*/}}
{{- define "kubetwin.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kubetwin.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
