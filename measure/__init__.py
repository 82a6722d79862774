"""Image hashing, domain manifests, PCR prediction and TCG event logs (later issues)."""
