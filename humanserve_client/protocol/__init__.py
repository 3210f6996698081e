"""TorchServe's gRPC interface: the .proto files here, the message modules generated from them (committed;
`make stubs`), and the service stubs made from those modules' descriptors (stub.py)."""
