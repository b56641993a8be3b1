"""Clients for each role; they talk gRPC only and never import the engine."""
