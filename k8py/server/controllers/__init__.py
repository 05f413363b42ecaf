"""Controllers, one module each, and the manager that runs them. Not built yet."""
