"""Getting verified bytes: HTTP today; OPFS, RAM and the peer swarm join as tiers later."""
