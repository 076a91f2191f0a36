"""How `segen eval` scores each model kind; a task's `evaluate` delegates to one module here."""
