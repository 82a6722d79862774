"""What the key and crypto commands add to TPM_CAP_ALGS (Part 2, 10.8.1): the encryption
schemes of RSA_Encrypt/RSA_Decrypt and ECDH_ZGen, and the block-cipher modes of
EncryptDecrypt (CFB is listed with the objects: it also protects children and contexts).
The TPMA_ALGORITHM values are libtpms' (asymmetric | encrypting, or symmetric |
encrypting; ECDH is asymmetric | method).
"""

from __future__ import annotations

from ..constants import TPM_ALG

KEY_ALGORITHMS: tuple[tuple[int, int], ...] = (
    (TPM_ALG.RSAES, 0x201),
    (TPM_ALG.OAEP, 0x201),
    (TPM_ALG.ECDH, 0x401),
    (TPM_ALG.CTR, 0x202),
    (TPM_ALG.OFB, 0x202),
    (TPM_ALG.CBC, 0x202),
    (TPM_ALG.ECB, 0x202),
)
