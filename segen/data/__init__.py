"""LightningDataModules. Small datasets live in memory as uint8 tensors (see `in_memory`)."""
