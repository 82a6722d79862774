"""Client side of DomS0: channels with credentials, Attach links, a TCTI for tpm2-pytss."""
