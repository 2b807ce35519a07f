"""Read replicas (role="follower"): `litestream restore -f` per database, its copy,
its lag, and the app's side of it. Never imports _primary."""
