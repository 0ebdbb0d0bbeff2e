"""Helpers for the provisioning tests: run the playbook, build a Debian root, probe DHCP."""
