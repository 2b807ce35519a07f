"""Who may replicate: the lock files among one host's workers, and the lease in the replica
across hosts (its stores, its keeper and the watchdog that enforces its deadline)."""
