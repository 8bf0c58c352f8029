"""The example ASGI app: Starlette handlers that await ``smtp_backends`` directly."""
