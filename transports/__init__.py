"""The I/O edges: thin shells that carry sync-protocol frames.

The protocol and the first transports arrive with the protocol issue.
"""
