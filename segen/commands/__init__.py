"""One module per CLI command; each exposes `main(cfg)` that Hydra calls."""
