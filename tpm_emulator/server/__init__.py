"""Socket front ends for a TPM: swtpm's data and control protocols.

The protocol logic (``control``, ``framing``) has no knowledge of what TPM it
serves; ``swtpm_socket`` is the IO loop; ``local`` and ``cli`` make the standalone
``tpm-emulator`` server out of them and our own TPM core.
"""
