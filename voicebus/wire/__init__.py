"""What travels, without I/O: event types, payload models, the route table, topics, the codec.

Sending side of the flow: ``emit -> validate (models) -> encode (codec)``; the
receiving side starts here too: ``decode (codec)``.
"""
