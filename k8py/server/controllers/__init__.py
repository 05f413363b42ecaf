"""Controllers, one module each (`base` holds what they share), and `manager`, which runs
them with the scheduler over one set of shared informers while this server leads."""
