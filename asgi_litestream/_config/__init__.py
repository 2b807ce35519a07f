"""Options and settings: what the app asked for, validated before anything is spawned
(options, Settings, databases, replica URLs, an existing litestream.yml, SQLite checks, names)."""
