"""Front ends for a TPM: swtpm's data and control protocols, the Microsoft
simulator's protocol (``mssim``) and a stdin/stdout pipe (``stdio``).

The protocol logic (``control``, ``framing``, the readers and platform table in
``mssim``) has no knowledge of what TPM it serves; ``swtpm_socket``, ``MssimServer``
and ``stdio.serve`` are the IO loops; ``local`` and ``cli`` make the standalone
``tpm-emulator`` server out of them and our own TPM core.
"""
