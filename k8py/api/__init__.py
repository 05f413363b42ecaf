"""The object model every side shares.

Will hold the resource registry (group/version/kind, scope, verbs), schemas, defaulting,
validation, patching, selectors, Table printing and `Status` errors. Objects are plain JSON
dicts end to end. Empty until the API server work lands: nothing here pretends to work yet.
"""
