"""DomS0's security: who calls (principals), what they may do (the security module
behind one hook per operation), and the sHype ACM policy the ``acm`` module enforces.

Decisions are separate from enforcement, as in XSM: the servicers and front ends call
:mod:`.hooks` at one point per operation; the active module(s) decide; denials (and,
if asked, permits) go to the audit log.
"""
