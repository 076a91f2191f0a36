"""Plain `nn.Module`s, no Lightning: one file per `model=` choice."""
