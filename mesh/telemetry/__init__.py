"""Telemetry: the one place mesh meets OpenTelemetry.

``tracing`` is what instrumented code uses: tracers from the OpenTelemetry API, and the
trace context carried inside control messages and barriers (W3C ``traceparent``). With
no SDK configured, all of it is a no-op and no context travels. ``setup`` installs the
SDK and the OTLP exporter in a daemon process; nothing else in mesh imports the SDK.
"""
