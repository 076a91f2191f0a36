"""What `segen sample` writes for each model kind; a task's `write_samples` delegates here."""
