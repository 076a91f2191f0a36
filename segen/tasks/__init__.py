"""LightningModules, one per task; each wraps a plain `nn.Module` from `segen.models`."""
