"""TorchServe's gRPC interface: the .proto files here, and the stubs `make setup` generates from them."""
