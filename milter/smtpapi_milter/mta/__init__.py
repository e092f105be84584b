"""Front ends that talk to an MTA: the pymilter adapter and its process supervision."""
