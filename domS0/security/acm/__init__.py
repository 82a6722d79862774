"""The sHype ACM policy engine (reference §2): parse and compile the XML policy, decide
Simple Type Enforcement and Chinese Wall questions, check a policy reload.

Pure Python with no IO: the security hooks, the store and ``vtpmctl policy`` call in.
"""

from .decide import (
    AcmStateError,
    ChineseWall,
    Decision,
    RunningDomain,
    check_reload,
    combine,
    ste_permits,
    ste_permits_domains,
)
from .policy import (
    UNLABELED,
    AcmPolicy,
    AcmPolicyError,
    SubjectLabel,
    compile,
    describe,
    digest,
    load_compiled,
    parse_xml,
)

__all__ = [
    "UNLABELED",
    "AcmPolicy",
    "AcmPolicyError",
    "AcmStateError",
    "ChineseWall",
    "Decision",
    "RunningDomain",
    "SubjectLabel",
    "check_reload",
    "combine",
    "compile",
    "describe",
    "digest",
    "load_compiled",
    "parse_xml",
    "ste_permits",
    "ste_permits_domains",
]
