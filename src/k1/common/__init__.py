"""Plumbing shared by every package: config files, atomic writes, SQLite stores, the Beta trust mean.

Nothing here knows about models, pools or bridges; everything else may import it."""
