"""Host-to-host vTPM migration as DomS0 runs it (data path 5 of the design).

- :mod:`.identity` — this host's certificate, key and trusted hosts CA; mutual TLS;
- :mod:`.artifacts` — the sidecar files (event log, AK, boot, images) a vTPM takes along;
- :mod:`.destination` — the ``Migration`` service: proves this host, receives, activates;
- :mod:`.source` — drives one migration out, step by step, with progress;
- :mod:`.resolver` — after a crash or a lost message, settles every marked vTPM with its
  peer so that it ends live in exactly one place.

The rule that makes a crash at any step safe: the *source* decides. Until it durably
writes its tombstone the vTPM is the source's (the destination holds a pending copy it
never runs); once the tombstone is written it is the destination's. Every message after
that is an idempotent notification of a decision already stored.
"""
