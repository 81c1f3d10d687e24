"""Real sample data shipped inside installed packages (no network at run time)."""
