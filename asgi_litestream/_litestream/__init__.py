"""The Litestream binary and what it speaks: find or download it, run one process, restart
policy, control socket, logs, metrics scrape, work folder, replica listings and positions."""
