"""Attestation (Part 1, clause 18 and 36; Part 2, 10.12; Part 3, clauses 18 and 21).

``structures`` holds TPMS_ATTEST and its attested union; ``info`` fills in the common
header and signs it (FillInAttestInfo / SignAttestInfo, with the privacy obfuscation of
Part 2, 10.12.12); ``audit`` keeps the command audit list, hash and digest and extends the
digest after every audited command; ``x509`` reads CertifyX509's partial certificate
and encodes what the TPM adds to it; ``commands`` declares Quote, Certify,
CertifyCreation, CertifyX509, GetTime, NV_Certify, the two audit-digest commands and
SetCommandCodeAuditStatus, and ``handlers`` runs them.
"""
