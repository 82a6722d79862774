"""vTPM migration between hosts: the sans-IO cryptographic core.

:mod:`.package` seals and opens the migration package, :mod:`.proof` is the
destination's host-TPM proof of its migration key, :mod:`.hostcert` the host
identities for mutual TLS. The protocol, journal and daemon are built around these.
"""
