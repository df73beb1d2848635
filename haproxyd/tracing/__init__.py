"""Tracing (issue 23): reading a client's W3C traceparent (context.py, no dependency).
The ids the proxy sends are request.TraceIds' (compiled with the data plane)."""
