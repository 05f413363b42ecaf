"""The scheduler: filter and score plugins in a small framework. Not built yet."""
