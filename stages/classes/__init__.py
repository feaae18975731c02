"""classes: class-filtered atlases and two-class comparison atlases, built on a row subset of the store."""
