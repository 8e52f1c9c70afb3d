"""Integrations with other libraries, each behind its extra: :mod:`.otel` (OpenTelemetry)."""
