"""The S3 gateway: the mesh behind the tools institutions already use.

It runs on the institution's side, above ``net`` (it uses the client) and below ``cli``: objects
are encrypted before they leave, as with the native client.  The HTTP-free parts (SigV4,
aws-chunked bodies, routing, S3's XML, ETags) are pure; the app drives them and a
:class:`~p2pstore.gateway.backend.Backend`.
"""
