"""Ready-made handlers (each optional: its extra installs what it needs)."""
