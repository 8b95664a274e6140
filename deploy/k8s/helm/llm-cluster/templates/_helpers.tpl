{{/* Names and labels shared by every object of the release. */}}
{{- define "llm-cluster.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{ end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "llm-cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llm-cluster.labels" -}}
{{ include "llm-cluster.selectorLabels" . }}
app.kubernetes.io/part-of: llm-cluster
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* A value from the ConfigMap (model and policy settings live there). */}}
{{- define "llm-cluster.fromConfig" -}}
valueFrom: { configMapKeyRef: { name: {{ include "llm-cluster.fullname" .root }}-config, key: {{ .key }} } }
{{- end }}

{{/*
The LLM_* environment of each service, beyond the ports (set by workloads.yaml): only options that
service reads (ServiceOptions' Option roles; tests/Cluster.Deploy.Tests checks the names).
*/}}
{{- define "llm-cluster.env.gateway" -}}
{{- $name := include "llm-cluster.fullname" . -}}
- name: LLM_PREFILL
  value: "http://{{ $name }}-prefill:{{ .Values.prefill.ports.grpc }}"
- name: LLM_DECODE
  value: "http://{{ $name }}-decode:{{ .Values.decode.ports.grpc }}"
- name: LLM_CACHE_MANAGER
  value: "http://{{ $name }}-cachemanager:{{ .Values.cachemanager.ports.grpc }}"
- name: LLM_REDIS
  value: {{ if .Values.redis.enabled }}"{{ $name }}-redis:6379"{{ else }}{{ required "redis.address is required when redis.enabled is false" .Values.redis.address | quote }}{{ end }}
- name: LLM_MODEL
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "model") | nindent 2 }}
- name: LLM_POLICY
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "policy") | nindent 2 }}
- name: LLM_SESSION_TTL
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "session-ttl") | nindent 2 }}
{{- end }}

{{- define "llm-cluster.env.prefill" -}}
- name: LLM_CACHE_MANAGER
  value: "http://{{ include "llm-cluster.fullname" . }}-cachemanager:{{ .Values.cachemanager.ports.grpc }}"
- name: LLM_MODEL
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "model") | nindent 2 }}
{{- if gt (int .Values.prefill.threads) 0 }}
- name: LLM_THREADS
  value: {{ .Values.prefill.threads | quote }}
{{- end }}
{{- end }}

{{- define "llm-cluster.env.decode" -}}
- name: LLM_CACHE_MANAGER
  value: "http://{{ include "llm-cluster.fullname" . }}-cachemanager:{{ .Values.cachemanager.ports.grpc }}"
- name: LLM_MODEL
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "model") | nindent 2 }}
- name: LLM_MAX_BATCH
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "max-batch") | nindent 2 }}
- name: LLM_CHECKPOINT_EVERY
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "checkpoint-every") | nindent 2 }}
{{- if gt (int .Values.decode.threads) 0 }}
- name: LLM_THREADS
  value: {{ .Values.decode.threads | quote }}
{{- end }}
{{- end }}

{{- define "llm-cluster.env.cachemanager" -}}
- name: LLM_MEMORY_MB
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "memory-mb") | nindent 2 }}
- name: LLM_SESSION_TTL
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "session-ttl") | nindent 2 }}
- name: LLM_QFILTERS
  {{- include "llm-cluster.fromConfig" (dict "root" . "key" "qfilters") | nindent 2 }}
{{- end }}
