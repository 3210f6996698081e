"""TorchServe's gRPC interface: the .proto files here and the stubs generated from them (committed; `make stubs`)."""
