"""Hosts: where ranks run (``host``), how ranks are laid out on them (``layout``), and the
hostfile formats users have (``hostfile``)."""
