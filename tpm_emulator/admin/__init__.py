"""Hierarchies and TPM administration (Part 3, clauses 22 (PCR allocation and
authorization), 24-25 (hierarchy commands, dictionary attack functions) and 29 (Clock)):
hierarchy authValues, authPolicies and enables, TPM2_Clear, the seeds' renewal, and the
dictionary-attack lockout that guards every DA-protected authorization."""
