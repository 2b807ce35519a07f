"""The primary's replication service: keeper, election, health, group commit and the
stale-file guard. Never imports _follower."""
