"""NV indices (Part 1, clause 37; Part 2, 13; Part 3, clause 31).

``public`` holds the Part 2 structures (TPMA_NV, TPM_NT, TPMS_NV_PUBLIC) and the Name
of an index; ``store`` the indices themselves, the access rules Part 3 states once for
every NV command, and their snapshot record; ``pin`` the rules of PIN Pass and PIN Fail
indices (when their authValue may be used, and how each use is counted);
``commands`` the Part 3 declarations and ``actions`` the command bodies, registered
with the rest of the TPM's commands.
"""
