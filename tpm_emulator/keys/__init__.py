"""Key use (Part 3, clauses 14 and 20). ``signing`` holds the signing primitive and its
Part 2 structures (TPMT_SIG_SCHEME, TPMT_SIGNATURE), shared by TPM2_Sign,
TPM2_VerifySignature and the attestation commands (``attest/``); the other modules
hold the key commands themselves.
"""
