"""Getting a database back from its replica: restore on boot, restore points
(point-in-time restore) and verification."""
