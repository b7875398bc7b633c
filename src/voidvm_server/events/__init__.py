"""Events: what happened, published on an in-process bus for WebSocket subscribers."""
