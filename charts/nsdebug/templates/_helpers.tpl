{{/*
The objects' base name: the release name when it already says nsdebug,
RELEASE-nsdebug otherwise, at most 63 characters (a label value's limit).
*/}}
{{- define "nsdebug.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
What selects the agent's pods. app.kubernetes.io/name=nsdebug is fixed (no
nameOverride): `kubectl nsdebug` finds the agent on a node by it.
*/}}
{{- define "nsdebug.selectorLabels" -}}
app.kubernetes.io/name: nsdebug
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "nsdebug.labels" -}}
{{ include "nsdebug.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The agent's image: repository:tag, the tag defaulting to appVersion. */}}
{{- define "nsdebug.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Where a tls Secret and the recordings appear in the agent's container. The
TLS key is beside the service account token, outside the tool tree
(/toolbox) that toolbox sessions see.
*/}}
{{- define "nsdebug.tlsDir" -}}/var/run/secrets/nsdebug/tls{{- end }}
{{- define "nsdebug.recordDir" -}}/var/lib/nsdebug/recordings{{- end }}

{{/*
The CRI socket's directory on the host, mounted read-only at the same path
under /host, and the socket's path in the agent's container. A directory
that holds much more than a runtime's sockets (/, /run, /var/run) is refused:
mounting it would give the agent every socket of the host's services.
*/}}
{{- define "nsdebug.criSocketDir" -}}
{{- if ne (clean .Values.criSocket) .Values.criSocket }}
{{- fail (printf "criSocket %s is not a clean path (no ., .. or //)" .Values.criSocket) }}
{{- end }}
{{- $dir := dir .Values.criSocket }}
{{- if has $dir (list "/" "/run" "/var/run" "/var") }}
{{- fail (printf "criSocket %s is directly in %s: the chart mounts the socket's directory, and would mount all of %s; give the runtime's socket in a directory of its own (containerd: /run/containerd/containerd.sock, CRI-O: /run/crio/crio.sock)" .Values.criSocket $dir $dir) }}
{{- end }}
{{- $dir }}
{{- end }}
{{- define "nsdebug.criSocket" -}}/host{{ .Values.criSocket }}{{- end }}

{{/*
One `--NAME=VALUE` argument as a YAML list item, or nothing when the value is
null (the agent's default then applies). Numbers from values files arrive as
float64, which would print as 1e+06: integers are printed as integers.
Usage: include "nsdebug.flag" (list "max-sessions" .Values.limits.maxSessions)
*/}}
{{- define "nsdebug.flag" -}}
{{- $name := index . 0 }}
{{- $value := index . 1 }}
{{- if not (kindIs "invalid" $value) }}
{{- if kindIs "float64" $value }}{{ $value = int64 $value }}{{ end }}
- {{ printf "--%s=%v" $name $value | quote }}
{{- end }}
{{- end }}

{{/*
The agent's command line. The first six are what the chart is built on: the
API on the pod's loopback (reached through kubectl port-forward), probes on
their own port, the CRI socket (its directory mounted under /host), the
image's tool tree for toolbox mode, audit on stdout.
*/}}
{{- define "nsdebug.args" -}}
- serve
- --listen=127.0.0.1:7443
- --health-listen=0.0.0.0:7444
- --cri-socket={{ include "nsdebug.criSocket" . }}
- --toolbox-root=/toolbox
- --audit-log=-
{{- if .Values.tls.existingSecret }}
- --tls-cert={{ include "nsdebug.tlsDir" . }}/tls.crt
- --tls-key={{ include "nsdebug.tlsDir" . }}/tls.key
{{- end }}
{{- include "nsdebug.flag" (list "auth" .Values.auth) }}
{{- with .Values.tokenAudiences }}
- --token-audiences={{ join "," . }}
{{- end }}
{{- if .Values.recording.enabled }}
- --record-dir={{ include "nsdebug.recordDir" . }}
{{- include "nsdebug.flag" (list "record-max-bytes" .Values.recording.maxBytes) }}
{{- include "nsdebug.flag" (list "record-retention" .Values.recording.retention) }}
{{- end }}
{{- include "nsdebug.flag" (list "max-sessions" .Values.limits.maxSessions) }}
{{- include "nsdebug.flag" (list "max-sessions-per-user" .Values.limits.maxSessionsPerUser) }}
{{- include "nsdebug.flag" (list "max-session-duration" .Values.limits.maxSessionDuration) }}
{{- include "nsdebug.flag" (list "session-idle-timeout" .Values.limits.sessionIdleTimeout) }}
{{- include "nsdebug.flag" (list "max-request-bytes" .Values.limits.maxRequestBytes) }}
{{- include "nsdebug.flag" (list "max-file-bytes" .Values.limits.maxFileBytes) }}
{{- include "nsdebug.flag" (list "max-connections" .Values.limits.maxConnections) }}
{{- include "nsdebug.flag" (list "request-header-timeout" .Values.limits.requestHeaderTimeout) }}
{{- include "nsdebug.flag" (list "client-timeout" .Values.limits.clientTimeout) }}
{{- include "nsdebug.flag" (list "pod-events" .Values.podEvents) }}
{{- include "nsdebug.flag" (list "log-format" .Values.logFormat) }}
{{- with .Values.shutdownGraceSeconds }}
- --shutdown-grace={{ int64 . }}s
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds, refused when it leaves the agent no time to end
its sessions after --shutdown-grace (the agent's default is 10s).
*/}}
{{- define "nsdebug.terminationGracePeriodSeconds" -}}
{{- $grace := int64 (.Values.shutdownGraceSeconds | default 10) }}
{{- $period := int64 .Values.terminationGracePeriodSeconds }}
{{- if le $period $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than shutdownGraceSeconds (%d): the kubelet would kill the agent before it has ended its sessions" $period $grace) }}
{{- end }}
{{- $period }}
{{- end }}
