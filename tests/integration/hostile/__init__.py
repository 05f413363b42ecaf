"""The hostile-input campaign's parts: bodies mutated at random (`mutations`) and the
recorder every check sends through (`campaign`)."""
