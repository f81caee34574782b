"""The control plane and entry points: OverseerService, the bootstrap, and (later) CLI and API."""
