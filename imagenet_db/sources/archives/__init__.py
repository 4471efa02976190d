"""Archive access: tar, .tar.gz and .zip members read in place, behind one container interface."""
