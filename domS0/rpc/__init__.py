"""gRPC side of DomS0: servicers, authentication, server assembly."""
