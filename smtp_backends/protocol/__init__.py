"""The sans-IO SMTP client protocol: bytes in, replies out; commands in, bytes out.

Nothing here imports asyncio, socket or ssl: every piece can be driven from a
table of plain bytes.
"""
