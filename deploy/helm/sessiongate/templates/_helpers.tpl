{{- define "sessiongate.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sessiongate.labels" -}}
app.kubernetes.io/name: sessiongate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sessiongate.secretName" -}}
{{- default (include "sessiongate.name" .) .Values.secrets.existingSecret -}}
{{- end -}}
