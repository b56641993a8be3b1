"""gRPC services of Turnstile (see DESIGN.md section 5)."""
