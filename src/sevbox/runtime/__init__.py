"""The runc-compatible runtime: bundles, the state store, containers and their monitor processes."""
