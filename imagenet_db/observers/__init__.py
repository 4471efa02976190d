"""Observers of what is written: the mean image (``mean``), the --check_size guard
(``sizecheck``); see ``observers.base`` for the interface and how to add one."""
