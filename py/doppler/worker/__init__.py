"""The worker side of DOPPLER: the protocol dispatcher and its request handlers."""
