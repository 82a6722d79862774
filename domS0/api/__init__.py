"""Generated gRPC/protobuf code for the vtpm.v1 contract (``proto/vtpm/v1``).

Regenerate with ``python -m domS0.api.regen``; a test fails when the committed code
differs from what the pinned grpcio-tools produces.
"""
